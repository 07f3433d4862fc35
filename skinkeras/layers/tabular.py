"""Clinical metadata encoders: the MLP tabular embedding (paper 5.4, Eq. 7-8) and a transformer variant (Figure 5)."""

import keras
from keras import layers

from skinkeras.layers.fusion import availability_gate
from skinkeras.layers.vit import TransformerEncoderBlock


@keras.saving.register_keras_serializable(package="skinkeras")
class TabularEmbedding(layers.Layer):
    """Two-layer MLP embedding of the metadata vector, zeroed where metadata is unavailable.

    Paper 5.4, Eq. 7: `E = BN(ReLU(W2 BN(ReLU(W1 x))))` (each W a Dense with
    bias), then Eq. 8: `E_hat = alpha * E` with `alpha` the per-sample binary
    availability, so a sample without metadata gives exactly the zero vector.
    Called on `[features, availability]`: features (B, F) (age scaled, sex
    one-hot, site one-hot; missing groups zero-filled), availability (B, 1)
    in {0, 1}; returns (B, units[-1]). The paper gives no widths; 128 then 256
    keeps the embedding small next to the 1920-wide visual features it is
    later projected to.

    Args:
        units: widths of the two Dense layers.
        bn_momentum: moving-average momentum of the inner BatchNormalization layers (0.99 Keras' default;
            the builders pass 0.9, PyTorch's default that the paper used).
    """

    def __init__(self, units=(128, 256), bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        if len(self.units) != 2:
            raise ValueError(f"TabularEmbedding has two Dense layers (Eq. 7); got units={units}")
        self.bn_momentum = float(bn_momentum)
        self.dense1 = layers.Dense(self.units[0], activation="relu", name="dense1")
        self.bn1 = layers.BatchNormalization(momentum=self.bn_momentum, name="bn1")
        self.dense2 = layers.Dense(self.units[1], activation="relu", name="dense2")
        self.bn2 = layers.BatchNormalization(momentum=self.bn_momentum, name="bn2")

    def build(self, input_shape):
        features_shape = tuple(input_shape[0])
        self.dense1.build(features_shape)
        hidden = features_shape[:-1] + (self.units[0],)
        self.bn1.build(hidden)
        self.dense2.build(hidden)
        self.bn2.build(features_shape[:-1] + (self.units[1],))

    def call(self, inputs, training=None):
        features, availability = inputs
        x = self.bn1(self.dense1(features), training=training)
        x = self.bn2(self.dense2(x), training=training)
        return x * availability_gate(availability, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.units[1])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "bn_momentum": self.bn_momentum})
        return config


@keras.saving.register_keras_serializable(package="skinkeras")
class MetadataTransformer(layers.Layer):
    """Transformer over one token per clinical feature group, mean-pooled and zeroed where metadata is unavailable.

    The `--metadata-encoder transformer` option: the abstract and Figure 5
    call the metadata branch "transformer-based" while Eq. 7 describes an MLP;
    this is the transformer reading. The metadata vector is cut into its
    feature groups (`group_sizes`, default layout age (1), sex one-hot (2),
    site one-hot (S)); each group gets its own Dense(dim) tokenizer (as in
    FT-Transformer), the tokens pass `num_layers` pre-norm
    `TransformerEncoderBlock`s, a final LayerNorm, a mean over tokens, and the
    result is multiplied by the per-sample availability (Eq. 8).

    Inputs are the same `[features (B, F), availability (B, 1)]` pair as
    `TabularEmbedding`, so no per-group availability input is needed: a
    missing group arrives zero-filled and its token is then that group's
    learned tokenizer bias, i.e. a learned "absent" token per group (for the
    one-hot groups this is unambiguous; an age of exactly 0 after scaling reads
    like a missing age, as it does for the MLP of Eq. 7). Returns (B, dim).

    Args:
        group_sizes: widths of the feature groups, in order; must sum to F.
        dim: token width.
        num_heads: attention heads.
        num_layers: transformer blocks.
        mlp_dim: hidden width of each block's MLP; None = 2 * dim.
        dropout: dropout inside the blocks.
    """

    def __init__(self, group_sizes=(1, 2, 15), dim=64, num_heads=4, num_layers=1, mlp_dim=None, dropout=0.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.group_sizes = tuple(int(g) for g in group_sizes)
        if not self.group_sizes or min(self.group_sizes) < 1:
            raise ValueError(f"group_sizes must be positive widths, got {group_sizes}")
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.mlp_dim = int(mlp_dim) if mlp_dim else 2 * self.dim
        self.dropout = float(dropout)
        self.tokenizers = [layers.Dense(self.dim, name=f"group{i}_tokenizer") for i in range(len(self.group_sizes))]
        self.blocks = [
            TransformerEncoderBlock(self.num_heads, self.mlp_dim, dropout=self.dropout, epsilon=1e-5, name=f"block{i}")
            for i in range(self.num_layers)
        ]
        self.norm = layers.LayerNormalization(epsilon=1e-5, name="norm")

    def build(self, input_shape):
        features_shape = tuple(input_shape[0])
        width = features_shape[-1]
        if width is not None and int(width) != sum(self.group_sizes):
            raise ValueError(
                f"MetadataTransformer group_sizes {self.group_sizes} sum to {sum(self.group_sizes)} "
                f"but the metadata has {width} features"
            )
        for tokenizer, size in zip(self.tokenizers, self.group_sizes):
            tokenizer.build((features_shape[0], size))
        tokens_shape = (features_shape[0], len(self.group_sizes), self.dim)
        for block in self.blocks:
            block.build(tokens_shape)
        self.norm.build(tokens_shape)

    def call(self, inputs, training=None):
        features, availability = inputs
        tokens, start = [], 0
        for tokenizer, size in zip(self.tokenizers, self.group_sizes):
            tokens.append(keras.ops.expand_dims(tokenizer(features[:, start:start + size]), 1))
            start += size
        x = keras.ops.concatenate(tokens, axis=1)
        for block in self.blocks:
            x = block(x, training=training)
        x = keras.ops.mean(self.norm(x), axis=1)
        return x * availability_gate(availability, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "group_sizes": self.group_sizes,
                "dim": self.dim,
                "num_heads": self.num_heads,
                "num_layers": self.num_layers,
                "mlp_dim": self.mlp_dim,
                "dropout": self.dropout,
            }
        )
        return config

"""Vision Transformer building blocks: patch embedding, encoder block, token selection (Table 2 ViT baseline)."""

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="skinkeras")
class PatchEmbedding(layers.Layer):
    """Splits an image into patches, embeds them linearly, prepends a class token and adds position embeddings.

    Paper 6.2 / Table 2 compares against a ViT; the paper gives no details, so
    this follows Dosovitskiy et al. (2021): a `patch_size` x `patch_size`
    stride-`patch_size` convolution is the linear patch projection, a learned
    class token is prepended and a learned position embedding (one per token,
    class token included) is added. Input (B, H, W, C) with H and W multiples
    of `patch_size`; output (B, 1 + (H / p) * (W / p), dim).

    Args:
        patch_size: side of a square patch in pixels (16 for ViT-B/16).
        dim: embedding width (768 for ViT-B/16).
    """

    def __init__(self, patch_size=16, dim=768, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.dim = int(dim)
        # (B, H, W, 3) images whatever the Keras image data format (only the CNN encoders follow it)
        self.projection = layers.Conv2D(self.dim, self.patch_size, strides=self.patch_size,
                                        data_format="channels_last", name="projection")

    def _grid(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ValueError("PatchEmbedding needs a static image size (position embeddings are per patch)")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"Image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return h // self.patch_size, w // self.patch_size

    def build(self, input_shape):
        gh, gw = self._grid(input_shape)
        self.num_patches = gh * gw
        self.projection.build(input_shape)
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.class_token = self.add_weight(shape=(1, 1, self.dim), initializer="zeros", name="class_token")
        self.position_embedding = self.add_weight(
            shape=(1, self.num_patches + 1, self.dim), initializer=init, name="position_embedding"
        )

    def call(self, images):
        x = self.projection(images)
        batch = keras.ops.shape(x)[0]
        x = keras.ops.reshape(x, (batch, self.num_patches, self.dim))
        cls = keras.ops.broadcast_to(keras.ops.cast(self.class_token, x.dtype), (batch, 1, self.dim))
        x = keras.ops.concatenate([cls, x], axis=1)
        return x + keras.ops.cast(self.position_embedding, x.dtype)

    def compute_output_shape(self, input_shape):
        gh, gw = self._grid(input_shape)
        return (input_shape[0], gh * gw + 1, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size, "dim": self.dim})
        return config


@keras.saving.register_keras_serializable(package="skinkeras")
class TransformerEncoderBlock(layers.Layer):
    """Pre-norm transformer encoder block: self-attention and an MLP, each with a residual connection.

    The block of ViT (Dosovitskiy et al., 2021) used by the Table 2 ViT
    baseline and by the metadata transformer of paper 5.4 / Figure 5:
    `x = x + Dropout(MHA(query=LN(x), value=LN(x), key=LN(x)))`, then
    `x = x + Dropout(Dense(Dropout(GELU(Dense(LN(x))))))`. Input and output
    (B, N, D).

    Args:
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP (3072 for ViT-B/16).
        key_dim: size of each head's query/key projection; None = D // num_heads (the usual split).
        dropout: dropout on the attention output and in the MLP.
        attention_dropout: dropout on the attention probabilities.
        epsilon: LayerNormalization epsilon.
    """

    def __init__(self, num_heads=12, mlp_dim=3072, key_dim=None, dropout=0.0, attention_dropout=0.0,
                 epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.key_dim = int(key_dim) if key_dim else None
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.epsilon = float(epsilon)
        self.norm1 = layers.LayerNormalization(epsilon=self.epsilon, name="norm1")
        self.norm2 = layers.LayerNormalization(epsilon=self.epsilon, name="norm2")
        self.attention_drop = layers.Dropout(self.dropout, name="attention_output_dropout")
        self.mlp_hidden_drop = layers.Dropout(self.dropout, name="mlp_hidden_dropout")
        self.mlp_drop = layers.Dropout(self.dropout, name="mlp_output_dropout")
        self.attention = None  # needs D, created in build
        self.mlp_in = layers.Dense(self.mlp_dim, activation="gelu", name="mlp_in")
        self.mlp_out = None

    def build(self, input_shape):
        dim = int(input_shape[-1])
        key_dim = self.key_dim or max(1, dim // self.num_heads)
        self.attention = layers.MultiHeadAttention(
            self.num_heads, key_dim, dropout=self.attention_dropout, name="attention"
        )
        self.mlp_out = layers.Dense(dim, name="mlp_out")
        self.norm1.build(input_shape)
        self.attention.build(input_shape, input_shape, input_shape)
        self.norm2.build(input_shape)
        self.mlp_in.build(input_shape)
        self.mlp_out.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def call(self, x, training=None):
        y = self.norm1(x)
        y = self.attention(query=y, value=y, key=y, training=training)
        x = x + self.attention_drop(y, training=training)
        y = self.mlp_hidden_drop(self.mlp_in(self.norm2(x)), training=training)
        return x + self.mlp_drop(self.mlp_out(y), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "key_dim": self.key_dim,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "epsilon": self.epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="skinkeras")
class SelectToken(layers.Layer):
    """Returns one token of a sequence: (B, N, D) -> (B, D); index 0 is ViT's class token.

    Args:
        index: position of the token to return.
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return x[:, self.index, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"index": self.index})
        return config

"""Multi-head cross-attention between the original and segmented image tokens (paper 5.3, Eq. 5-6)."""

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="skinkeras")
class CrossAttentionBlock(layers.Layer):
    """Original-image tokens attend over segmented-image tokens: query and value original, key segmented.

    Paper 5.3: "the feature sequence from the original image branch serves as
    the query (Q) and value (V), while the segmented image features serve as
    the key (K)", Eq. 5 per head, heads concatenated and projected back to the
    token width D, then Eq. 6 with residual connections and layer norm. The
    exact arrangement (post-norm, as PyTorch's transformer layers default to):

        A     = MHA(query=orig, key=seg, value=orig)          # Eq. 5, output projected to D
        Z     = LayerNorm(orig + Dropout(A))
        Z_hat = LayerNorm(Z + Dropout(FFN(Z)))                 # Eq. 6, FFN = Dense(ffn_dim)-ReLU-Dropout-Dense(D)

    so attention weights come from how original tokens match segmented tokens,
    and what is mixed are (projected) original tokens. The MHA is always
    called with keywords: its positional order is (query, value, key).
    Called on `[orig_tokens, seg_tokens]`, both (B, N, D) with the same N;
    returns (B, N, D).

    The paper gives neither heads nor sizes. Defaults: 8 heads;
    `key_dim=None` splits D over the heads (D // num_heads, 240 for
    DenseNet201's 1920), the convention of PyTorch's `nn.MultiheadAttention`
    that the paper's code (channels-first shapes, "identity" heads) most likely
    used; `ffn_dim=2048`, the default width of PyTorch's transformer layers;
    dropout 0.1 (also PyTorch's transformer default).

    Args:
        num_heads: attention heads.
        key_dim: size of each head's query/key (and value) projection; None = D // num_heads.
        ffn_dim: hidden width of the feed-forward network.
        dropout: dropout on attention probabilities, the attention output and in the FFN.
        epsilon: LayerNormalization epsilon.
    """

    def __init__(self, num_heads=8, key_dim=None, ffn_dim=2048, dropout=0.1, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim) if key_dim else None
        self.ffn_dim = int(ffn_dim)
        self.dropout = float(dropout)
        self.epsilon = float(epsilon)
        self.attention = None  # its key size may depend on D: created in build
        self.attention_drop = layers.Dropout(self.dropout, name="attention_output_dropout")
        self.norm1 = layers.LayerNormalization(epsilon=self.epsilon, name="norm1")
        self.ffn_in = layers.Dense(self.ffn_dim, activation="relu", name="ffn_in")
        self.ffn_hidden_drop = layers.Dropout(self.dropout, name="ffn_hidden_dropout")
        self.ffn_out = None
        self.ffn_drop = layers.Dropout(self.dropout, name="ffn_output_dropout")
        self.norm2 = layers.LayerNormalization(epsilon=self.epsilon, name="norm2")

    def build(self, input_shape):
        orig_shape, seg_shape = input_shape
        dim = int(orig_shape[-1])
        if seg_shape[-1] is not None and int(seg_shape[-1]) != dim:
            raise ValueError(f"Original and segmented tokens need the same width, got {dim} and {seg_shape[-1]}")
        self.attention = layers.MultiHeadAttention(
            self.num_heads, self.key_dim or max(1, dim // self.num_heads), dropout=self.dropout, name="attention"
        )
        self.ffn_out = layers.Dense(dim, name="ffn_out")
        self.attention.build(query_shape=orig_shape, value_shape=orig_shape, key_shape=seg_shape)
        self.norm1.build(orig_shape)
        self.ffn_in.build(orig_shape)
        self.ffn_out.build(tuple(orig_shape[:-1]) + (self.ffn_dim,))
        self.norm2.build(orig_shape)

    def attend(self, orig, seg, training=None, return_attention_scores=False):
        """Eq. 5 only: MHA(query=orig, key=seg, value=orig), projected to D (and the (B, heads, N, N) weights)."""
        return self.attention(
            query=orig, value=orig, key=seg, training=training, return_attention_scores=return_attention_scores
        )

    def call(self, inputs, training=None):
        orig, seg = inputs
        z = self.norm1(orig + self.attention_drop(self.attend(orig, seg, training=training), training=training))
        f = self.ffn_out(self.ffn_hidden_drop(self.ffn_in(z), training=training))
        return self.norm2(z + self.ffn_drop(f, training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "ffn_dim": self.ffn_dim,
                "dropout": self.dropout,
                "epsilon": self.epsilon,
            }
        )
        return config

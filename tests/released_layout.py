"The released stage-3 state-dict layout, written by hand from the reference notes, shared by the tests."
from ssl_mepr.fusion import RELEASED_INPUT_DIMS
from ssl_mepr.labels import MODALITIES

D = 256  # released hidden width

# The released state dict, written by hand from the reference notes (authors-fusion-stage3.md §2,
# authors-unimodal-and-app.md §6.5): key -> shape, in the order PyTorch lists them.
def released_shapes():
    shapes = {"emo_query": (1, 1, D), "pkl_query": (1, 1, D)}
    for m in MODALITIES:
        shapes |= {f"projectors.{m}.0.proj.0.weight": (D, RELEASED_INPUT_DIMS[m]), f"projectors.{m}.0.proj.0.bias": (D,),
                   f"projectors.{m}.0.proj.3.weight": (D,), f"projectors.{m}.0.proj.3.bias": (D,),
                   f"projectors.{m}.1.adapter.0.weight": (D // 2, D), f"projectors.{m}.1.adapter.0.bias": (D // 2,),
                   f"projectors.{m}.1.adapter.3.weight": (D, D // 2), f"projectors.{m}.1.adapter.3.bias": (D,),
                   f"projectors.{m}.1.layernorm.weight": (D,), f"projectors.{m}.1.layernorm.bias": (D,)}
    shapes |= {"graph_attn.a": (2 * D, 1), "graph_attn.W.weight": (D, D),
               "cross_attn.in_proj_weight": (3 * D, D), "cross_attn.in_proj_bias": (3 * D,),
               "cross_attn.out_proj.weight": (D, D), "cross_attn.out_proj.bias": (D,),
               "emo_head.weight": (7, D), "emo_head.bias": (7,), "pkl_head.weight": (5, D), "pkl_head.bias": (5,),
               "guide_bank_emo.embeddings": (7, D), "guide_bank_pkl.embeddings": (5, D),
               "emo_logit_proj.weight": (D, 7), "emo_logit_proj.bias": (D,),
               "per_logit_proj.weight": (D, 5), "per_logit_proj.bias": (D,)}
    return shapes

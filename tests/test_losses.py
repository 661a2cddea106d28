"Tests of ssl_mepr.losses: hand-checked values of the loss terms and the stage-1/2 loss (nbs/14_losses.ipynb holds more, next to the code)."
import math

import pytest
import torch
import torch.nn.functional as F

from ssl_mepr.losses import (MultiTaskLoss, UnimodalLoss, confident_emotion_rows, confident_trait_elements,
                             emotion_class_weights, emotion_loss, personality_loss)

NAN = float("nan")


def close(a, b, eps=1e-6): return abs(a - b) < eps


# ---- hand-checked values ---------------------------------------------------------------------------------------

def test_argmax_ce_ties_go_to_the_lowest_index():
    "Neutral beats Happiness in a tie, Anger beats Happiness; CE against class 1 with logits favouring class 0 by 1 nat."
    logits = torch.tensor([[1., 0, 0, 0, 0, 0, 0]]).repeat(2, 1)
    targets = torch.tensor([[.5, 0, 0, 0, .5, 0, 0], [0, .5, 0, 0, .5, 0, 0]])
    lse = math.log(math.e + 6)
    assert close(emotion_loss(logits[:1], targets[:1]).item(), lse - 1)   # class 0 (Neutral)
    assert close(emotion_loss(logits[1:], targets[1:]).item(), lse)       # class 1 (Anger), logit 0


def test_mosei_only_batch_has_per_ssl_but_no_per_sup():
    logits = torch.zeros(3, 7)
    scores = torch.tensor([[.95, .5, .5, .5, .5], [.5] * 5, [.5, .5, .5, .5, .3]])
    emo_t = torch.eye(7)[:3]
    terms = MultiTaskLoss()(logits, scores, emo_t, torch.full((3, 5), NAN))
    assert sorted(terms) == ["emo_sup", "per_ssl"]
    assert close(terms["per_ssl"].item(), -(math.log(.95) + math.log(.7)) / 2)


def test_pseudo_label_thresholds_are_strict():
    selected, _ = confident_emotion_rows(torch.tensor([[.6, .4, 0, 0, 0, 0, 0], [.6000001, .3999999, 0, 0, 0, 0, 0]]))
    assert selected.tolist() == [False, True]
    q = torch.tensor([[.6, .4, .6000001, .3999999, .5]])
    assert confident_trait_elements(q).tolist() == [[False, False, True, True, False]]


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="emotion_logits must have shape"):
        MultiTaskLoss()(torch.zeros(2, 6), torch.zeros(2, 5), torch.zeros(2, 7), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="personality_targets: 1 row"):
        personality_loss(torch.zeros(2, 5), torch.tensor([[NAN, 0, 0, 0, 0], [0.] * 5]))


# ---- the stage-1/2 loss ----------------------------------------------------------------------------------------

def test_unimodal_loss_with_class_weights_from_train_targets():
    train = torch.tensor([[1., 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0],
                          [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, .5, .5], [0, 0, 0, 0, 0, .5, .5], [NAN] * 7])
    w = emotion_class_weights(train)                       # N = 7: (7 - 1)/1 = 6 for the first five, (7 - 1)/1 = 6 too
    assert torch.allclose(w, torch.full((7,), 6.))
    crit = UnimodalLoss(class_weights=w)
    out = crit(torch.zeros(2, 7), torch.full((2, 5), .5), train[:2], torch.tensor([[NAN] * 5, [.25] * 5]))
    assert close(out["emotion"].item(), 6 * math.log(7)) and close(out["personality"].item(), .25)
    assert close(out["total"].item(), .1 * 6 * math.log(7) + .25)
    ref = 0.1 * F.cross_entropy(torch.zeros(2, 7), train[:2], weight=w) + 0.25
    assert close(out["total"].item(), ref.item())

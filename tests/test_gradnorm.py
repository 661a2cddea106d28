"Tests of ssl_mepr.gradnorm: the wallet update by hand, the renormalisation rules, the released loop (nbs/15_gradnorm.ipynb holds more, next to the code)."
import pytest

from ssl_mepr.gradnorm import ReferenceTwoWalletGradNorm, wallet_update
from ssl_mepr.gradients import TwoWalletGradNorm


def close(a, b, eps=1e-6): return abs(a - b) < eps


def test_sign_step_and_floor_by_hand():
    # r = (2, .5), mean 1.25; G = (3, 1), mean 2; targets 3.2 and 0.8 -> w = (1 + .015, 1 - .005), renormalised to 2
    new = wallet_update({"a": 1., "b": 1.}, {"a": 2., "b": .5}, {"a": 3., "b": 1.}, {"a": 1., "b": 1.}, 2, 1.0, .005)
    assert close(new["a"], 1.0099502487562189, 1e-12) and close(new["b"], 0.9900497512437811, 1e-12)
    # equal r, G = (1, 2), target 1.5, lr 1: w = (2, max(-1, .001)) -> (4/2.001, .002/2.001)
    new = wallet_update({"a": 1., "b": 1.}, {"a": 1., "b": 1.}, {"a": 1., "b": 2.}, {"a": 1., "b": 1.}, 2, 1.0, 1.0)
    assert close(new["a"], 1.9990004997501248, 1e-12) and close(new["b"], 0.0009995002498750625, 1e-15)


def test_renormalisation_quirk_and_corrected_mode():
    args = ({"emo_ssl": .4, "per_ssl": .4}, {"per_ssl": .2}, {"per_ssl": 3.}, {"per_ssl": .5})
    released = wallet_update(*args, budget=.8, alpha=1.5, lr=.01)
    assert close(released["per_ssl"], .8, 1e-12) and released["emo_ssl"] == .4
    corrected = wallet_update(*args, budget=.8, alpha=1.5, lr=.01, renormalise_over="all")
    assert close(corrected["per_ssl"], .4, 1e-12) and corrected["emo_ssl"] == .4


@pytest.mark.parametrize("cls", [ReferenceTwoWalletGradNorm, TwoWalletGradNorm])
def test_bad_switches_are_refused(cls):
    with pytest.raises(ValueError, match="renormalise_over"):
        cls(renormalise_over="none")
    with pytest.raises(ValueError, match="shared_parameters"):
        cls(shared_parameters="heads")

"Shared pytest set-up."
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    "The models in these tests are small per call: on shared cores one intra-op thread is several times faster."
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_predict_run(tmp_path_factory):
    "A real run folder on the tiny demo corpus (one epoch per stage, width 16) with its tiny backbones, for predict."
    from ssl_mepr.run import run_spec, write_run_params
    from ssl_mepr.stages import run_stages
    params = dict(run_name="tiny", runs_root=str(tmp_path_factory.mktemp("runs")), demo_size="tiny", model_width=16,
                  max_layers=1, stage1_epochs=1, stage2_epochs=1, stage3_epochs=1, progress=False)
    spec = run_spec(**params)
    write_run_params(spec.run_dir, params)
    run_stages(spec, 3)
    return spec.run_dir

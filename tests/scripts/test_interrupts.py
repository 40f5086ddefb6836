"""Stopping train.py with a signal (libs/training/interrupt.py, loop.py, train.py): SIGINT,
SIGTERM and SIGHUP save a checkpoint of the finished iteration, stop the loader workers and exit
128 + the signal; the checkpoint (and those left by kill -9) resume to the very weights of an
uninterrupted run."""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from tests.tiny_model import narrow

import train
from libs.training.interrupt import TrainingInterrupted, StopSignals
from libs.training.loop import train as run_training

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
ITER_MAX = 12  # slack after checkpoint 2 for the signal to land mid-run (an iteration: ~0.1 s)
_REFERENCE = {}  # the uninterrupted run's final weights, computed once


def signal_config(toy_cfg, tmp_path, workers=2, name="run.yaml"):
    """The toy config with ITER_MAX iterations, a snapshot every 2, loader workers; on disk."""
    cfg = narrow(toy_cfg, ITER_MAX=ITER_MAX, ITER_SNAP=2, ITER_TB=4)
    cfg.DATALOADER.NUM_WORKERS = workers
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return cfg, path


def reference_weights(toy_cfg, tmp_path):
    """The final weights of the same run without interruption (one thread, in this process)."""
    if "model" not in _REFERENCE:
        cfg = narrow(toy_cfg.deepcopy(), ITER_MAX=ITER_MAX, ITER_SNAP=100, ITER_TB=4)
        cfg.EXP.OUTPUT_DIR = str(tmp_path / "reference")
        cfg.EXP.LOG_DIR = str(tmp_path / "reference-runs")
        _REFERENCE["model"] = {k: v.clone() for k, v in
                               run_training(cfg, CPU, progress=False).state_dict().items()}
    return _REFERENCE["model"]


def assert_same_weights(final_path, reference):
    final = torch.load(final_path, weights_only=True)
    assert final["iteration"] == ITER_MAX
    for key, value in reference.items():
        assert torch.equal(final["model"][key], value), key


def start_training(config, *args):
    """``python train.py`` as a user runs it, with one torch thread (bit-exact resumes)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), "--config", str(config), "--no-cuda",
         "--no-eval", *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def wait_for(path, process, timeout=120):
    """Poll until ``path`` exists (the process must still be running)."""
    end = time.monotonic() + timeout
    while not Path(path).exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)


def children(pid):
    """The process ids whose parent is ``pid`` (from /proc; psutil is not a dependency)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def resume_in_process(args):
    result = CliRunner().invoke(train.main, [*args, "--no-cuda", "--no-eval"])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_stops_the_workers_and_resumes_bit_exactly(
        toy_cfg, tmp_path, one_torch_thread, signum):
    cfg, config = signal_config(toy_cfg, tmp_path)
    out = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID
    process = start_training(config, "--set", "SOLVER.ITER_TB=4")
    wait_for(out / "checkpoint_2.pth", process)
    workers = children(process.pid)
    assert len(workers) == 2  # NUM_WORKERS: the loader of epoch 0 is running
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err[-3000:]
    assert not [pid for pid in workers if alive(pid)]
    lines = err.strip().splitlines()
    stopped = [line for line in lines if line.startswith(f"{signal.Signals(signum).name}: ")]
    assert len(stopped) == 1, err[-3000:]
    iteration = int(stopped[0].split("after iteration ")[1].split(";")[0])
    checkpoint = out / f"checkpoint_{iteration}.pth"
    assert 2 <= iteration < ITER_MAX and stopped[0].endswith(f"saved {checkpoint}")
    assert torch.load(checkpoint, weights_only=True)["iteration"] == iteration
    assert lines[-2] == "Resume with:"
    command = shlex.split(lines[-1])
    assert command == ["python", "train.py", "--config", str(config),
                       "--set", "SOLVER.ITER_TB=4", "--resume", str(checkpoint)]
    assert not list(out.glob(".*tmp*"))
    log = (Path(cfg.EXP.LOG_DIR) / cfg.EXP.ID / "train.log").read_text()
    assert f"Stopped by {signal.Signals(signum).name} after iteration {iteration}" in log

    resume_in_process(command[2:])  # the printed command, run here
    assert_same_weights(out / "checkpoint_final.pth", reference_weights(toy_cfg, tmp_path))


def test_sighup_saves_and_exits_129(toy_cfg, tmp_path):
    cfg, config = signal_config(toy_cfg, tmp_path, workers=0)
    out = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID
    process = start_training(config)
    wait_for(out / "checkpoint_2.pth", process)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 129, err[-3000:]
    assert "SIGHUP: stopped after iteration " in err
    saved = sorted(int(p.stem.split("_")[1]) for p in out.glob("checkpoint_*.pth"))
    assert saved[0] == 2 and saved[-1] < ITER_MAX and not (out / "checkpoint_final.pth").exists()


def test_kill_9_at_three_moments_resumes_to_the_same_weights(toy_cfg, tmp_path,
                                                             one_torch_thread):
    """kill -9 after checkpoint 2, after checkpoint 6 and at an arbitrary moment (maybe inside
    a save); each time ``--resume latest`` goes on, and the end is the uninterrupted run."""
    cfg, config = signal_config(toy_cfg, tmp_path)
    out = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID
    def kill(process):
        process.kill()
        process.communicate()

    process = start_training(config)
    wait_for(out / "checkpoint_2.pth", process)
    kill(process)
    process = start_training(config, "--resume", "latest")
    wait_for(out / "checkpoint_4.pth", process)
    began = time.monotonic()
    wait_for(out / "checkpoint_6.pth", process)
    two_iterations = time.monotonic() - began  # as fast as this machine runs them now
    kill(process)
    process = start_training(config, "--resume", "latest")
    wait_for(out / "checkpoint_8.pth", process)
    time.sleep(0.85 * two_iterations)  # in iterations 9-10, or inside the save of checkpoint 10
    kill(process)
    latest = max(int(p.stem.split("_")[1]) for p in out.glob("checkpoint_[0-9]*.pth"))
    assert 8 <= latest < ITER_MAX

    process = start_training(config, "--resume", "latest")  # a new process, as after a crash
    output, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert f"Resuming from {out / f'checkpoint_{latest}.pth'} at iteration {latest}." in output
    assert_same_weights(out / "checkpoint_final.pth", reference_weights(toy_cfg, tmp_path))
    assert not list(out.glob(".*tmp*"))  # a save cut short leaves nothing behind


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_under_torchrun_every_process_stops_at_the_same_iteration(toy_cfg, tmp_path):
    """SIGTERM to rank 1 alone: the request is all-reduced, so rank 0 stops after the same
    iteration and saves it (a process stopping alone would leave the other in a collective)."""
    cfg, config = signal_config(toy_cfg, tmp_path, workers=0)
    out = Path(cfg.EXP.OUTPUT_DIR) / cfg.EXP.ID
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO_ROOT / "train.py"), "--config", str(config), "--no-cuda", "--no-eval"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "checkpoint_2.pth", launcher)
    ranks = sorted(children(launcher.pid))
    assert len(ranks) == 2
    rank_1 = [pid for pid in ranks
              if "RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")]
    os.kill(rank_1[0], signal.SIGTERM)
    _, err = launcher.communicate(timeout=120)
    stopped = [line for line in err.splitlines() if line.startswith("SIGTERM: stopped after")]
    assert len(stopped) == 1, err[-3000:]  # printed by rank 0, which was not signalled
    iteration = int(stopped[0].split("after iteration ")[1].split(";")[0])
    assert 2 <= iteration < ITER_MAX
    assert torch.load(out / f"checkpoint_{iteration}.pth", weights_only=True)["iteration"] \
        == iteration
    assert "exitcode  : 143" in err and not (out / "checkpoint_final.pth").exists()


def test_second_ctrl_c_stops_at_once_and_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # within the grace period: the same request
        assert stop.signum == signal.SIGTERM
        stop.first_at -= 10
        with pytest.raises(TrainingInterrupted) as raised:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the handler runs between bytecodes
        assert raised.value.exit_code == 130 and raised.value.iteration is None
    assert {s: signal.getsignal(s) for s in before} == before

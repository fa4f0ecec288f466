"""The stop flag after training: a late time-limit warning (SIGUSR1/SIGUSR2) no longer kills a
process whose work is done (under srun, one finished rank killed by it made a COMPLETED job
FAILED); handlers that someone else had are given back, and SIGTERM still ends the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_a_late_warning_does_not_kill_a_finished_process():
    r = run("""
        import os, signal
        from mnist_hpc.training import stopflag
        stopflag.install()
        stopflag.uninstall()
        stopflag.ignore_late_warnings()  # as the `mnist-hpc` command does when it is done
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        print("still here", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """)
    assert r.returncode == 0 and r.stdout.split() == ["still", "here", "True"], r


def test_in_process_callers_get_their_handlers_back_exactly():
    r = run("""
        import signal
        from mnist_hpc.training import stopflag
        for s in (signal.SIGUSR1, signal.SIGUSR2):  # ignored signals stay ignored across exec
            signal.signal(s, signal.SIG_DFL)
        stopflag.install()
        stopflag.uninstall()  # the API and notebooks train in-process: nothing left behind
        print(signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL, signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL)
        """)
    assert r.returncode == 0 and r.stdout.split() == ["True", "True"], r


def test_the_cli_ignores_a_late_warning_after_training(tiny_config, synth_root, tmp_path):
    r = run(f"""
        import atexit, os, signal, sys
        from mnist_hpc.cli import main
        def late():  # Slurm's warning, after the work is done, while the process ends
            os.kill(os.getpid(), signal.SIGUSR1)
            print("survived", flush=True)
        atexit.register(late)
        sys.argv = ["mnist-hpc", "train", {str(tiny_config)!r}, "--data-dir", {str(synth_root)!r},
                    "--set", "train.epochs=1"]
        main()  # the command itself, as the console script calls it: it ends the process
        print("not reached")
        """)
    assert r.returncode == 0 and r.stdout.strip().endswith("survived"), r
    assert "not reached" not in r.stdout


def test_the_cli_run_in_process_leaves_no_handler_behind(cli, tiny_config, synth_root):
    import signal

    assert cli("train", tiny_config, "--data-dir", synth_root, "--set", "train.epochs=1").code == 0
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_handlers_someone_else_had_are_given_back():
    r = run("""
        import signal
        from mnist_hpc.training import stopflag
        mine = lambda *a: None
        signal.signal(signal.SIGUSR1, mine)
        stopflag.install()
        assert signal.getsignal(signal.SIGUSR1) is not mine
        stopflag.uninstall()
        print(signal.getsignal(signal.SIGUSR1) is mine)
        """)
    assert r.returncode == 0 and r.stdout.split() == ["True"], r

"""Run many command lines of the real entry points, each in its own forked process, cheaply.

    python tests/cli_runner.py CASES.json RESULTS.json

CASES.json is a list of {"name", "script" (train.py | evaluate.py | ablate.py), "args": [...]}.
This process imports the scripts once (torch, torchvision and transformers take seconds to
import), then forks one child per case. A child sets ``sys.argv``, sends its stdout and stderr
to files and runs exactly what ``python SCRIPT ARGS`` runs under ``if __name__ == "__main__"``,
``run_main(main)``. The parent records each child's exit status and output. No torch work runs
in this process before a fork, so no thread pool is inherited half-initialized.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_case(module, args: list[str], out_dir: Path) -> dict:
    stdout, stderr = out_dir / "stdout", out_dir / "stderr"
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            with open(stdout, "w") as out, open(stderr, "w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = os.fdopen(1, "w", buffering=1)
                sys.stderr = os.fdopen(2, "w", buffering=1)
                sys.argv = [f"{module.__name__}.py", *args]
                from core.errors import run_main

                try:
                    run_main(module.main)
                    code = 0
                except SystemExit as exit_:
                    code = exit_.code if isinstance(exit_.code, int) else 1
                    if not isinstance(exit_.code, int) and exit_.code is not None:
                        sys.stderr.write(f"{exit_.code}\n")
                except BaseException:  # a bug: the traceback, as Python would print it
                    import traceback

                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {"returncode": os.waitstatus_to_exitcode(status), "stdout": stdout.read_text(),
            "stderr": stderr.read_text()}


def main() -> None:
    cases_path, results_path = sys.argv[1:3]
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    import ablate
    import evaluate
    import train

    modules = {"train.py": train, "evaluate.py": evaluate, "ablate.py": ablate}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(json.loads(Path(cases_path).read_text())):
            out_dir = Path(tmp) / str(i)
            out_dir.mkdir()
            results[case["name"]] = run_case(modules[case["script"]], case["args"], out_dir)
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main()

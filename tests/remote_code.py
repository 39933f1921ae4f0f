"""Run a script in a fresh process where ``comface_hf`` cannot be imported (what a Hub user without the package has)."""

import subprocess
import sys
import textwrap


def run_without_comface_hf(tmp_path, body: str, marker: str, timeout: int = 300) -> None:
    """Run ``body`` (dedented Python) with ``comface_hf`` blocked and the test folder off ``sys.path``; assert that it
    exits 0 and prints ``marker``. ``HF_MODULES_CACHE`` goes under ``tmp_path``, so remote code is fetched afresh."""
    preamble = f"""
        import sys
        sys.modules["comface_hf"] = None  # any `import comface_hf` now raises ImportError
        sys.path = [p for p in sys.path if p not in ("", {str(tmp_path)!r})]
        try:
            import comface_hf
        except ImportError:
            pass
        else:
            raise SystemExit("comface_hf was importable")
        """
    script = textwrap.dedent(preamble) + textwrap.dedent(body)
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker in result.stdout

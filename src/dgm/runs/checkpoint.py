"""Run-directory files and the checkpoint protocol: weights (safetensors), config (JSON), trainer state (torch).

Layout of a run directory (docs/ARCHITECTURE.md):

    DIR/config.json        model config + data spec + scaling + training config
    DIR/model.safetensors  weights, "model."- and "ema."-prefixed, metadata {"format": "dgm", "step", "kind"}
    DIR/state.pt           optimizer state, step, RNG states (tensors/ints/lists; weights_only=True)
    DIR/state.next.pt      only while a checkpoint is being written (see ``save_checkpoint``)
    DIR/log.jsonl          one JSON object per logged step (``dgm.runs.log``)

Every file is written to a temporary sibling and moved into place with ``os.replace``
(``dgm.runs.atomic``), so a reader sees either the old file or the new one, never half of one;
``save_checkpoint`` orders the writes so that a kill at any moment leaves a resumable run, and a write that
fails (a full disk, the file-size limit, a folder made read-only) leaves the last complete checkpoint.

Reading is poison-proof: no pickle (safetensors, JSON, and ``torch.load(weights_only=True)``); a config.json,
weights file or trainer state larger than the memory available, or a config that describes a model too large
for it (``dgm.runs.budget``), is refused before it is read or built; names and shapes that do not match the
config are a one-line ``CheckpointError``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from dgm.runs.atomic import atomic_write, atomic_write_bytes, fsync_folder, temporaries_of
from dgm.runs.budget import check_model_budget
from dgm.runs.log import LOG
from dgm.runs.resources import ResourceError, require_memory
from dgm.runs.rng_state import get_rng_state, set_rng_state  # noqa: F401 - re-exported (training/loop.py)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
STATE_NEXT = "state.next.pt"  # the state of a checkpoint being written (see save_checkpoint)
FORMAT = "dgm"
MAX_CONFIG_BYTES = 16 << 20  # a config.json is a few KiB; a larger one is not a dgm config


class CheckpointError(ValueError):
    """A run directory or checkpoint file is missing, truncated, or not a dgm checkpoint."""


def write_config(run_dir: Path, config: dict) -> None:
    """Write ``DIR/config.json`` atomically (sorted keys, so equal configs give equal files)."""
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(Path(run_dir) / CONFIG, text.encode())


def read_config(run_dir: Path) -> dict:
    """Read ``DIR/config.json``; a missing or unreadable file is a ``CheckpointError``."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a dgm run directory (no {CONFIG})")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{str(path)!r} is {path.stat().st_size:,} bytes, not a dgm config")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{str(path)!r} is not a readable dgm config ({err})") from None
    if not isinstance(config, dict) or "model" not in config or "kind" not in config.get("model", {}):
        raise CheckpointError(f"{str(path)!r} is not a dgm config (no model.kind)")
    return config


def save_weights(path: Path, tensors: dict[str, torch.Tensor], *, step: int, kind: str) -> None:
    """Save ``tensors`` (names prefixed "model." / "ema.") as safetensors with dgm metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": FORMAT, "step": str(int(step)), "kind": kind}
    atomic_write_bytes(Path(path), st_save(tensors, metadata=metadata))


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def load_weights(path: Path, prefix: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a dgm safetensors -> (tensors, metadata), only the tensors named ``prefix + "."...`` if given; a
    truncated or foreign file is a CheckpointError, one larger than the available memory a ResourceError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    require_memory(path.stat().st_size, f"the weights file {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            if metadata.get("format") != FORMAT or "step" not in metadata:
                raise CheckpointError(f"{str(path)!r} is a safetensors file but not a dgm checkpoint")
            names = [k for k in f.keys() if prefix is None or k.startswith(prefix + ".")]
            tensors = {k: f.get_tensor(k) for k in names}
    except (SafetensorError, ValueError, RuntimeError, OSError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{str(path)!r} is truncated or not a safetensors file ({_first_line(err)})") from None
    return tensors, metadata


def checkpoint_step(run_dir: Path) -> int:
    """The training step of the run's last checkpoint, from the weights file's metadata (no tensor is read)."""
    return int(load_weights(Path(run_dir) / WEIGHTS, prefix="\0")[1]["step"])


def save_state(path: Path, state: dict) -> None:
    """Save the trainer state (tensors, ints, floats, lists, dicts only) atomically with ``torch.save``."""
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    """Load ``state.pt`` with ``weights_only=True``; a truncated or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no trainer state at {str(path)!r}")
    require_memory(path.stat().st_size, f"the trainer state {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad pickle/zip
        raise CheckpointError(f"{str(path)!r} is truncated or not a dgm trainer state ({_first_line(err)})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{str(path)!r} is not a dgm trainer state (no step)")
    return state


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose name starts with ``prefix + "."``, with the prefix removed."""
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``module.load_state_dict(state)`` with a one-line CheckpointError when names or shapes differ."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or bad:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}") if not bad else (
            f"shape of {bad[0]!r} is {tuple(state[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}"
        )
        raise CheckpointError(f"{where} does not match the model in its config.json: {detail}")
    module.load_state_dict(state)


def save_checkpoint(run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, *, step: int, state: dict) -> None:
    """Write a checkpoint of ``model`` and ``ema`` at ``step`` that a SIGKILL at any moment leaves resumable.

    ``state``: the trainer state (optimizer, RNG, loss scale; tensors, numbers, lists and dicts only), saved
    with ``"step"``. The order: 1. state.next.pt, 2. model.safetensors (model and EMA weights, step),
    3. rename state.next.pt to state.pt, each file written atomically. Killed before 2, the old weights and
    state.pt agree; between 2 and 3, the new weights and state.next.pt do (``restore_checkpoint``). A write
    that fails (no space left, the file-size limit, no permission) raises a one-line CheckpointError and
    leaves the last complete checkpoint as it was.
    """
    run_dir = Path(run_dir)
    try:
        save_state(run_dir / STATE_NEXT, {**state, "step": step})
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
        tensors |= {f"ema.{k}": v.detach().cpu().clone() for k, v in ema.state_dict().items()}
        save_weights(run_dir / WEIGHTS, tensors, step=step, kind=model.kind)
        os.replace(run_dir / STATE_NEXT, run_dir / STATE)
        fsync_folder(run_dir)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _first_line(err)
        raise CheckpointError(f"could not write the checkpoint of step {step} to {str(run_dir)!r} ({reason}); "
                              "the last complete checkpoint there is kept") from None


def restore_checkpoint(run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module) -> dict:
    """Load the last checkpoint of ``run_dir`` into ``model`` and ``ema``; return its trainer state (with
    ``"step"``).

    The state is state.pt, or state.next.pt when the run was killed after writing the weights of a
    checkpoint but before renaming its state (see ``save_checkpoint``). Weights and state of different
    checkpoints are a CheckpointError.
    """
    run_dir = Path(run_dir)
    tensors, meta = load_weights(run_dir / WEIGHTS)
    step = int(meta["step"])
    state = load_state(run_dir / STATE)
    if int(state["step"]) != step and (run_dir / STATE_NEXT).exists():
        state = load_state(run_dir / STATE_NEXT)
    if int(state["step"]) != step:
        raise CheckpointError(
            f"{str(run_dir)!r}: {WEIGHTS} is at step {step} but {STATE} at step {state['step']}"
            " (the files come from different checkpoints)")
    load_into(model, split_prefix(tensors, "model"), str(run_dir / WEIGHTS))
    load_into(ema, split_prefix(tensors, "ema"), str(run_dir / WEIGHTS))
    return state


def build_checked(model_config: dict, where: str) -> torch.nn.Module:
    """``build_model(model_config)`` after checking that the model fits in memory (``dgm.runs.budget``); an
    invalid config is a one-line CheckpointError naming ``where``, a too large one a ResourceError.

    Call it wherever a model is built from a config read from disk (``dgm train --resume`` too).
    """
    from dgm.models import build_model

    if not isinstance(model_config, dict):
        raise CheckpointError(f"{where!r} holds an invalid model config (not a table)")
    try:
        check_model_budget(model_config, where)
        return build_model(model_config)
    except (TypeError, KeyError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{where!r} holds an invalid model config ({_first_line(err)})") from None
    except ValueError as err:
        if isinstance(err, (CheckpointError, ResourceError)):
            raise
        raise CheckpointError(f"{where!r} holds an invalid model config ({_first_line(err)})") from None


def load_model(run_dir: Path, *, ema: bool = True) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a run directory and load its last checkpoint (EMA weights by default).

    Returns ``(model, config)`` with the model in eval mode.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model = build_checked(config["model"], str(run_dir / CONFIG))
    prefix = "ema" if ema else "model"
    tensors, metadata = load_weights(run_dir / WEIGHTS, prefix)
    if metadata.get("kind") != model.kind:
        raise CheckpointError(
            f"{str(run_dir / WEIGHTS)!r} holds a {metadata.get('kind')!r} model, config.json a {model.kind!r}"
        )
    load_into(model, split_prefix(tensors, prefix), str(run_dir / WEIGHTS))
    if hasattr(model, "set_analytic"):  # a DDPM: the Gamma of its analytic variance, if estimated for this step
        from dgm.runs.analytic import load_analytic

        try:
            model.set_analytic(load_analytic(run_dir, step=int(metadata["step"])))
        except ValueError:  # a Gamma table of another length: as stale as one of another step
            model.set_analytic(None)
    model.eval()
    return model, config


# --- run directory ------------------------------------------------------------------------------

RESUMABLE = ("train.steps", "train.minutes")  # what a --resume may change: how long to train


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat |= _flatten(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def config_difference(old: dict, new: dict, *, ignore: tuple[str, ...] = ()) -> str | None:
    """The first setting in which two run configs differ, as "key: old -> new", or None if equal."""
    a, b = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))
    for key in sorted(set(a) | set(b)):
        if key not in ignore and a.get(key) != b.get(key):
            return f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
    return None


def prepare_run_dir(out: Path, run_config: dict, *, resume: bool, write: bool) -> None:
    """Check that ``out`` may take this run (and with ``write``, create it and write config.json).

    Without ``resume`` a directory that already holds a run is an error (same config: "pass --resume";
    another config: "choose another --out"); nothing is overwritten. With ``resume`` the directory must
    hold a checkpoint of the same run; only ``RESUMABLE`` settings may change.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {str(out)!r} exists and is not a directory")
    held = [name for name in (CONFIG, WEIGHTS, STATE, LOG) if (out / name).exists()]
    if not resume and held == [CONFIG] and _same_run(out, run_config):
        held = []  # killed before its first checkpoint: nothing to resume, so it starts again
    if not resume and held:
        try:
            diff = config_difference(read_config(out), run_config, ignore=RESUMABLE)
        except CheckpointError:
            diff = "its config.json is unreadable"
        if diff is None:
            raise CheckpointError(f"--out {str(out)!r} already holds this run; pass --resume to continue it "
                                  "or choose another --out")
        raise CheckpointError(f"--out {str(out)!r} already holds a different run ({diff}); "
                              "choose another --out")
    if resume:
        if not (out / WEIGHTS).is_file():
            hint = "; it stopped before its first checkpoint: run it again without --resume" if (
                (out / CONFIG).is_file()) else ""
            raise CheckpointError(f"--resume: {str(out)!r} has no checkpoint to resume (no {WEIGHTS}){hint}")
        diff = config_difference(read_config(out), run_config, ignore=RESUMABLE)
        if diff is not None:
            raise CheckpointError(f"--resume: {str(out)!r} holds a different run ({diff})")
    if write:
        out.mkdir(parents=True, exist_ok=True)
        remove_temporaries(out)
        write_config(out, run_config)


def _same_run(out: Path, run_config: dict) -> bool:
    try:
        return config_difference(read_config(out), run_config, ignore=RESUMABLE) is None
    except CheckpointError:
        return False


def remove_temporaries(run_dir: Path) -> list[str]:
    """Delete the temporary siblings (``.NAME.tmpPID``) that writers killed mid-write left in ``run_dir``; the
    names removed. Only the run's one writer calls it (``prepare_run_dir``), so no live write is touched."""
    removed = [p for name in (CONFIG, WEIGHTS, STATE, STATE_NEXT, LOG) for p in temporaries_of(Path(run_dir) / name)]
    for path in removed:
        path.unlink(missing_ok=True)
    return [p.name for p in removed]

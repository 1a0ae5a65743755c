# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""One command for a full UMed protection report on a dataset (Lin et al., IJCAI 2024, Tables 1-3, Fig. 3).

Steps, each run as exactly the documented bundle command (``python -m monai.bundle run ...``) in a subprocess:

1. ``split``: a random train/test split of the dataset (``<output_dir>/split.json``);
2. ``protect``: train UMed's generators on the split's ``training`` entries and write the protected copy
   (``<output_dir>/protect/``: ``protected/``, ``manifest.json``, ``protector.pt``), unless ``--protected_dir``
   points at an existing protected folder;
3. ``train_exploiter``: for every exploiter, the clean baseline (defense ``none``; every defense with
   ``--defend_clean``) and the protected training set under every defense, each scored on the CLEAN test set
   (``<output_dir>/runs/<clean|protected>_<exploiter>_<defense>/metrics.json``).

Then ``report.md`` (table exploiter x defense, invisibility of the protected set, dataset, sizes, commands,
wall times), ``report.csv`` (one row per exploiter run) and ``figure.png`` (like Fig. 3 of the paper: original |
delta_c | delta_t | protected for a few training cases, from the original and the WRITTEN protected files). Both
tables give each run's final-epoch DSC and its best DSC over the epochs with that epoch (``dsc_best``,
``dsc_best_epoch`` of the run's ``metrics.json``): unlearnable data can be learnable early in training.

``--reuse`` skips every step whose outputs exist and whose recorded command is unchanged (``steps.json``), so an
interrupted report resumes; a step that reruns makes the steps depending on it rerun too.

Example::

    python examples/protection_report.py --dataset_dir ../shared/data/busi_224 --output_dir outputs/report \\
        --exploiters unet --defenses none,jpeg --image_size 96 --max_epochs 30 --lr 1e-3
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "umed" / "configs"
sys.path.insert(0, str(REPO))

from monai_umed.utils import atomic_write_bytes, atomic_write_text  # noqa: E402

#: columns of report.csv
CSV_COLUMNS = ("data", "exploiter", "defense", "dsc", "dsc_best", "dsc_best_epoch", "jaccard", "n_test", "seconds")


# --------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    """Print a progress line of the report (flushed, so it interleaves correctly with the steps' output)."""
    print(f"[protection_report] {msg}" if not msg.startswith("[") else msg, flush=True)


def read_json(path: Path) -> Any:
    """JSON content of ``path``, or ``None`` when it is missing or unreadable (e.g. an interrupted write)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    out: list[str] = []
    for t in (s.strip() for s in text.split(",")):
        if t and t not in out:
            out.append(t)
    return out


def option_names(tokens: list[str]) -> set[str]:
    """Names of the ``--name value`` / ``--name=value`` options among command-line tokens."""
    return {t[2:].split("=", 1)[0] for t in tokens if t.startswith("--")}


def bundle_command(run_id: str, config: str, overrides: dict[str, Any], extra: list[str] | None = None) -> list[str]:
    """``python -m monai.bundle run <run_id> --config_file <config> --key value ...`` (+ verbatim ``extra``);
    an override also named in ``extra`` is left out, so ``extra`` wins."""
    extra = list(extra or [])
    given = option_names(extra)
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", str(CONFIGS / config)]
    for k, v in overrides.items():
        if v is None or k in given:
            continue
        cmd += [f"--{k}", str(v)]
    return cmd + extra


def display_command(cmd: list[str]) -> str:
    """The command as a shell line, with the interpreter written as ``python``."""
    return shlex.join(["python", *cmd[1:]] if cmd and cmd[0] == sys.executable else cmd)


class Steps:
    """The record of finished steps (``<output_dir>/steps.json``): command, wall time and finish time of each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = read_json(path)
        self.data: dict[str, dict] = data if isinstance(data, dict) else {}

    def matches(self, key: str, cmd: list[str]) -> bool:
        """True when ``key`` has no record (outputs made otherwise: trusted) or was recorded with ``cmd``."""
        rec = self.data.get(key)
        return rec is None or rec.get("command") == cmd[1:]

    def record(self, key: str, cmd: list[str], seconds: float) -> None:
        """Record a finished step and save the record atomically."""
        self.data[key] = {
            "command": cmd[1:],
            "seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")

    def seconds(self, key: str) -> float | None:
        rec = self.data.get(key)
        return None if rec is None else rec.get("seconds")


def run_step(cmd: list[str], log_file: Path, quiet: bool, cwd: Path) -> float:
    """Run ``cmd``, streaming its output (and saving it to ``log_file``); returns the wall time in seconds.

    Raises:
        SystemExit: the command failed (the tail of its output is shown).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    tail: list[str] = []
    with open(log_file, "w", encoding="utf-8") as lf:
        lf.write(f"$ {display_command(cmd)}\n")
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n").split("\r")[-1]  # progress bars: keep the last state of the line
            lf.write(line + "\n")
            tail = (tail + [line])[-40:]
            if not quiet and line.strip():
                print(f"    {line}", flush=True)
        rc = proc.wait()
    seconds = time.perf_counter() - t0
    if rc != 0:
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(
            f"step failed (exit status {rc}) after {seconds:.1f} s: {display_command(cmd)}\nlog: {log_file}"
        )
    return seconds


def move_aside(folder: Path) -> None:
    """Rename a stale output folder to ``<name>.stale-<time>`` (never deleted), so a rerun starts clean."""
    if folder.exists():
        dst = folder.with_name(f"{folder.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(folder, dst)
        log(f"moved the incomplete/stale {folder} aside to {dst}")


def protect_complete(protect_dir: Path) -> bool:
    """The protect job finished: a manifest with a summary, the protected folder and, for UMed, the protector."""
    manifest = read_json(protect_dir / "manifest.json")
    trained = isinstance(manifest, dict) and (manifest.get("settings") or {}).get("protector", "umed") == "umed"
    return (
        ((protect_dir / "protector.pt").is_file() or not trained)
        and isinstance(manifest, dict)
        and "summary" in manifest
        and (protect_dir / "protected").is_dir()
    )


def find_manifest(protected_dir: Path) -> Path | None:
    """The manifest of a protected folder: ``<dir>/manifest.json`` or ``<dir>/../manifest.json`` (protect job)."""
    for cand in (protected_dir / "manifest.json", protected_dir.parent / "manifest.json"):
        if cand.is_file():
            return cand
    return None


def locate_protected(protected_dir: Path, rel: str) -> Path | None:
    """The protected file of a case: same relative path, or the same stem as ``.png`` (JPEG inputs)."""
    direct = protected_dir / rel
    if direct.is_file():
        return direct
    from monai_umed.data import stem_of

    as_png = direct.parent / (stem_of(str(direct)) + ".png")
    return as_png if as_png.is_file() else None


def fmt(v: Any, digits: int = 4) -> str:
    """A metric for the markdown table (``n/a`` for missing / non-finite)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def fmt_best(metrics: dict) -> str:
    """The best DSC over the epochs of a run and its epoch, ``"0.6123 (ep. 7)"`` (``n/a`` when not recorded)."""
    best, epoch = metrics.get("dsc_best"), metrics.get("dsc_best_epoch")
    if fmt(best) == "n/a":
        return "n/a"
    return f"{fmt(best)} (ep. {epoch})" if epoch is not None else fmt(best)


# --------------------------------------------------------------------------------------------- figure
def _to_rgb8(unit_chw, lo: float = 0.0, hi: float = 1.0):
    import numpy as np

    a = np.clip((np.asarray(unit_chw, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    a = a[:1].repeat(3, 0) if a.shape[0] in (1, 2) else a[:3]
    return np.rint(np.moveaxis(a, 0, -1) * 255).astype(np.uint8)


def _panel(rgb8, width: int, nearest: bool):
    from PIL import Image

    img = Image.fromarray(rgb8)
    height = max(1, round(width * img.height / img.width))
    return img.resize((width, height), Image.NEAREST if nearest else Image.BILINEAR)


def _label(draw, xy: tuple[int, int], text: str, font) -> None:
    x, y = xy
    box = draw.textbbox((x, y), text, font=font)
    draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), font=font)


def make_figure(
    dataset_dir: Path,
    split_file: Path,
    protected_dir: Path,
    output: Path,
    settings: dict | None,
    epsilon: float,
    num_cases: int = 4,
    panel: int = 160,
    manifest: dict | None = None,
) -> list[str]:
    """Compose a Fig.-3-like picture for up to ``num_cases`` training cases and write it atomically to ``output``.

    Columns: original | delta_c | delta_t | protected, with ``delta = protected - original`` of the files as read
    back (what was published), shown as ``0.5 + delta / (2 epsilon)`` (mid-grey = unchanged). ``delta_c`` is the
    part of delta inside the contour band, ``delta_t`` the part inside the ROI interior, with the band computed
    on the native mask as the writer does (``settings``: ``band_width``, ``band_side``, ``image_size``); without
    those settings the whole delta is shown in the delta_c column and the delta_t column says so.

    Returns:
        the names of the cases shown.
    """
    import numpy as np
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from monai_umed.data import LoadMask, intensity_range, load_datalist, read_raw, to_unit
    from monai_umed.protectors import native_band_width
    from monai_umed.transforms import ContourBand

    items = list(load_datalist(dataset_dir=str(dataset_dir), datalist=str(split_file), key="training"))
    changed = {}
    for e in (manifest or {}).get("images", []):
        changed[os.path.abspath(e.get("source", ""))] = e.get("changed_fraction", 0.0)
    candidates = []
    for it in items:
        dst = locate_protected(protected_dir, it["image_rel"])
        if dst is None:
            continue
        if changed.get(os.path.abspath(it["image"]), 1.0) > 0:
            candidates.append((it, dst))
    if not candidates:
        raise RuntimeError(f"no protected training image found under {protected_dir} for the figure.")
    k = min(num_cases, len(candidates))
    picks = [candidates[round(i * (len(candidates) - 1) / max(k - 1, 1))] for i in range(k)]

    can_split = bool(settings) and all(s in settings for s in ("band_width", "band_side", "image_size"))
    load_mask = LoadMask()
    rows = []
    for it, dst in picks:
        raw = read_raw(it["image"])
        unit = to_unit(raw)
        written = read_raw(dst)
        if written.array.dtype.kind == "f":  # as the writer measures: the original's range
            lo, hi = intensity_range(raw.array)
            prot = ((np.asarray(written.array, np.float64) - lo) / (hi - lo)).reshape(unit.shape).astype(np.float32)
        else:
            prot = to_unit(written)
        if prot.shape != unit.shape:
            log(f"figure: {dst} has shape {prot.shape}, its original {unit.shape}; case skipped")
            continue
        delta = prot.astype(np.float64) - unit.astype(np.float64)
        if can_split:
            size = settings["image_size"]
            size = (size, size) if isinstance(size, int) else tuple(size)
            native = unit.shape[1:]
            width = native_band_width(int(settings["band_width"]), size, native)
            fg = (torch.as_tensor(load_mask(it["label"])).as_subclass(torch.Tensor) > 0).float()
            masks = torch.as_tensor(ContourBand(width=width, side=str(settings["band_side"]))(fg))
            masks = masks.as_subclass(torch.Tensor).cpu().numpy().astype(np.float64)
            band, interior = masks[0:1], masks[1:2]
            d_c, d_t = delta * band, delta * interior
        else:
            d_c, d_t = delta, None
        amp = lambda d: 0.5 + d / (2 * epsilon)  # noqa: E731
        tiles = [
            _panel(_to_rgb8(unit), panel, nearest=False),
            _panel(_to_rgb8(amp(d_c)), panel, nearest=True),
            _panel(_to_rgb8(amp(d_t) if d_t is not None else np.full_like(delta, 0.5)), panel, nearest=True),
            _panel(_to_rgb8(prot), panel, nearest=False),
        ]
        rows.append((it["name"], tiles, float(np.abs(delta).max())))
    if not rows:
        raise RuntimeError("no case could be drawn for the figure.")

    font = ImageFont.load_default()
    gap, top, bottom = 4, 18, 18
    titles = [
        "original",
        "delta_c (amplified)" if can_split else "delta (all, amplified)",
        "delta_t (amplified)" if can_split else "delta_t: split n/a",
        "protected (written)",
    ]
    width = 4 * panel + 5 * gap
    caption = 14  # a strip above each row for its case name: a label drawn on the image would hide content
    height = top + sum(caption + r[1][0].height + gap for r in rows) + bottom
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, t in enumerate(titles):
        draw.text((gap + j * (panel + gap) + 2, 3), t, fill=(0, 0, 0), font=font)
    y = top
    for name, tiles, linf in rows:
        _label(draw, (gap + 3, y + 1), f"{name}  l-inf {linf * 255:.1f}/255", font)
        y += caption
        for j, tile in enumerate(tiles):
            canvas.paste(tile, (gap + j * (panel + gap), y))
        y += tiles[0].height + gap
    draw.text(
        (gap + 2, y + 2),
        f"grey = unchanged, white = +{epsilon * 255:.0f}/255, black = -{epsilon * 255:.0f}/255 (files as written)",
        fill=(0, 0, 0),
        font=font,
    )
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(output, buf.getvalue())
    return [r[0] for r in rows]


# --------------------------------------------------------------------------------------------- report
def write_report(
    args: argparse.Namespace,
    out: Path,
    split: dict,
    runs: list[dict],
    step_rows: list[dict],
    manifest: dict | None,
    protected_dir: Path,
    figure_cases: list[str],
    figure_error: str | None,
    total_seconds: float,
) -> None:
    """Write ``report.csv`` and ``report.md`` atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in runs:
        m = r.get("metrics") or {}
        w.writerow(
            [
                r["data"],
                r["exploiter"],
                r["defense"],
                "" if m.get("dsc") is None else repr(m["dsc"]),
                "" if m.get("dsc_best") is None else repr(m["dsc_best"]),
                "" if m.get("dsc_best_epoch") is None else m["dsc_best_epoch"],
                "" if m.get("jaccard") is None else repr(m["jaccard"]),
                m.get("n_test", ""),
                "" if r.get("seconds") is None else r["seconds"],
            ]
        )
    atomic_write_text(out / "report.csv", buf.getvalue())

    by_key = {(r["data"], r["exploiter"], r["defense"]): r.get("metrics") or {} for r in runs}
    lines = [
        {
            "umed": "# UMed protection report",
            "lsp": "# Protection report: LSP baseline (Yu et al. 2022)",
            "em": "# Protection report: EM baseline (Huang et al. 2021)",
            "tap": "# Protection report: TAP baseline (Fowl et al. 2021)",
            "sep": "# Protection report: SEP baseline (Chen et al. 2023)",
            "ar": "# Protection report: AR baseline (Sandoval-Segura et al. 2022)",
        }[args.protector],
        "",
        f"Dataset: `{os.path.abspath(args.dataset_dir)}`"
        + (f" (stems: `{args.stems}`)" if args.stems else "")
        + f" -- split `{out / 'split.json'}`: {split.get('numTraining')} training / {split.get('numTest')} test"
        f" cases (test_fraction {split.get('test_fraction')}, seed {split.get('seed')}).",
        f"Protected training set: `{protected_dir}`.",
        f"Exploiters trained {args.max_epochs} epochs, batch {args.batch_size}, Adam lr {args.exploiter_lr:g}, "
        f"{args.image_size}x{args.image_size}; DSC / Jaccard on the CLEAN test set.",
        "DSC and Jaccard are the final epoch's; best DSC is the peak over the epochs each run evaluated (every "
        "epoch by default, and the last one), with its epoch. The test set chooses that epoch, so best DSC is an "
        "optimistic score: what an exploiter that stops training early could reach.",
        "",
    ]
    summary = (manifest or {}).get("summary") or {}
    settings = (manifest or {}).get("settings") or {}
    if summary:
        lines.append(
            f"Invisibility of the protected set ({summary.get('num_images')} images, files as written): "
            f"PSNR {fmt(summary.get('psnr_mean'), 2)} dB, SSIM {fmt(summary.get('ssim_mean'))}, "
            f"l-inf {fmt(summary.get('linf_max'))} ({fmt((summary.get('linf_max') or 0.0) * 255, 2)}/255), "
            f"changed fraction {fmt(summary.get('changed_fraction_mean'))}."
        )
    else:
        lines.append("Invisibility of the protected set: no manifest summary found.")
    verification = (manifest or {}).get("verification")
    if verification:
        lines.append(f"Self-verification of protect (manifest): {verification.get('message')}")
    if settings:
        keys = ("protector", "epsilon", "image_size", "steps", "phase_steps", "surrogate_epochs", "generator_epochs", "batch_size",
                "lr_generator", "lr_surrogate", "band_width", "patch_size", "stability", "max_rounds", "clean_steps", "snapshots",
                "pgd_steps", "seed")
        lines.append("Protector settings: " + ", ".join(f"{k}={settings[k]}" for k in keys if k in settings) + ".")
    lines += [
        "",
        "| Exploiter | Defense | Clean DSC | Clean best DSC | Clean Jaccard | Protected DSC | Protected best DSC "
        "| Protected Jaccard |",
        "|---|---|---|---|---|---|---|---|",
    ]
    footnote = False
    for e in args.exploiter_list:
        for d in args.defense_list:
            clean = by_key.get(("clean", e, d))
            mark = ""
            if clean is None:
                clean, mark = by_key.get(("clean", e, "none"), {}), "\u2020"
                footnote = True
            prot = by_key.get(("protected", e, d), {})
            lines.append(
                f"| {e} | {d} | {fmt(clean.get('dsc'))}{mark} | {fmt_best(clean)}{mark} | "
                f"{fmt(clean.get('jaccard'))}{mark} | {fmt(prot.get('dsc'))} | {fmt_best(prot)} | "
                f"{fmt(prot.get('jaccard'))} |"
            )
    if footnote:
        lines += ["", "\u2020 clean baseline trained without a defense (pass `--defend_clean` to defend it too)."]
    failed = [r for r in runs if r.get("error")]
    if failed:
        lines += ["", "Failed runs: " + "; ".join(f"{r['name']} ({r['error']})" for r in failed)]
    lines += ["", "## Figure", ""]
    if figure_error:
        lines.append(f"figure.png not written: {figure_error}")
    else:
        lines.append(
            "![UMed perturbations](figure.png)\n\nTraining cases "
            + ", ".join(f"`{c}`" for c in figure_cases)
            + ": original | delta_c | delta_t | protected, delta = written protected file - original, "
            "amplified as 0.5 + delta / (2 eps)."
        )
    lines += ["", "## Steps", "", "| # | Step | Status | Wall time (s) | Command |", "|---|---|---|---|---|"]
    for i, s in enumerate(step_rows, 1):
        cmd = s["command"].replace("|", "\\|")
        lines.append(f"| {i} | {s['title']} | {s['status']} | {fmt(s.get('seconds'), 1)} | `{cmd}` |")
    run_total = sum(s.get("seconds") or 0.0 for s in step_rows)
    lines += [
        "",
        f"Wall time: {total_seconds:.1f} s for this call; {run_total:.1f} s for all steps as first run.",
        "",
        f"Report command: `{shlex.join(['python', *sys.argv])}`",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines))


# --------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line interface (see the module docstring)."""
    p = argparse.ArgumentParser(
        description="split -> protect -> train_exploiter (clean and protected) -> report.md / report.csv / figure.png",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset_dir", required=True, help="dataset folder (folders or BUSI layout)")
    p.add_argument("--stems", default=None, help="optional text file with one case stem per line")
    p.add_argument("--output_dir", required=True, help="report folder (must not be inside the dataset)")
    p.add_argument("--exploiters", default="unet,attention_unet,transunet", help="comma list of exploiters")
    p.add_argument(
        "--defenses", default="none", help="comma list, e.g. none,gaussian_blur,jpeg,grayscale,adversarial_training"
    )
    p.add_argument("--defend_clean", action="store_true", help="apply each defense to the clean baseline too")
    p.add_argument("--image_size", type=int, default=96)
    p.add_argument("--max_epochs", type=int, default=30, help="exploiter epochs")
    p.add_argument("--batch_size", type=int, default=16, help="batch size of the exploiters and of protect")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam lr of UMed's generators and surrogate")
    p.add_argument("--exploiter_lr", type=float, default=None, help="Adam lr of the exploiters (default: --lr)")
    p.add_argument(
        "--protector",
        default="umed",
        choices=["umed", "lsp", "em", "tap", "sep", "ar"],
        help="umed (protect.json), or a baseline: lsp / ar (protect_lsp.json / protect_ar.json, no training), em, "
        "tap, sep (protect_em.json, protect_tap.json, protect_sep.json)",
    )
    p.add_argument(
        "--protect_args", default="", help='extra overrides for the protect run, e.g. "--surrogate_epochs 6"'
    )
    p.add_argument("--test_fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--jpeg_quality", type=int, default=30)
    p.add_argument("--reuse", action="store_true", help="skip steps whose outputs exist (resume a report)")
    p.add_argument(
        "--protected_dir", default=None, help="use this protected folder (+ its manifest) instead of protect"
    )
    p.add_argument("--figure_cases", type=int, default=4, help="training cases shown in figure.png")
    p.add_argument("--quiet", action="store_true", help="do not echo the steps' output (it is still logged)")
    args = p.parse_args(argv)
    args.exploiter_lr = args.lr if args.exploiter_lr is None else args.exploiter_lr
    args.exploiter_list = comma_list(args.exploiters)
    args.defense_list = comma_list(args.defenses)
    from monai_umed.apps import EXPLOIT_DEFENSES
    from monai_umed.networks import EXPLOITERS

    bad = [e for e in args.exploiter_list if e not in EXPLOITERS]
    if bad or not args.exploiter_list:
        p.error(f"--exploiters: unknown {bad or 'empty list'}; valid: {', '.join(EXPLOITERS)}")
    bad = [d for d in args.defense_list if d not in EXPLOIT_DEFENSES]
    if bad or not args.defense_list:
        p.error(f"--defenses: unknown {bad or 'empty list'}; valid: {', '.join(EXPLOIT_DEFENSES)}")
    if not Path(args.dataset_dir).is_dir():
        p.error(f"--dataset_dir not found: {args.dataset_dir}")
    if args.protected_dir and not Path(args.protected_dir).is_dir():
        p.error(f"--protected_dir not found: {args.protected_dir}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the report; returns the exit status (1 when an exploiter run failed)."""
    t_start = time.perf_counter()
    args = parse_args(argv)
    out = Path(args.output_dir).resolve()
    dataset = Path(args.dataset_dir).resolve()
    from monai_umed.utils import check_output_dir

    check_output_dir(dataset, out)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out / "steps.json")
    device = None if args.device == "auto" else args.device
    split_file = out / "split.json"
    protect_dir = out / "protect"
    protected_dir = Path(args.protected_dir).resolve() if args.protected_dir else protect_dir / "protected"

    # ---- plan
    split_cmd = bundle_command(
        "split",
        "split.json",
        {
            "dataset_dir": dataset,
            "output_file": split_file,
            "test_fraction": args.test_fraction,
            "seed": args.seed,
            "stems": os.path.abspath(args.stems) if args.stems else None,
        },
    )
    protect_cmd = None
    if not args.protected_dir:
        common = {"dataset_dir": dataset, "datalist": split_file, "output_dir": protect_dir, "seed": args.seed}
        if args.protector in ("lsp", "ar"):
            protect_cmd = bundle_command("protect", f"protect_{args.protector}.json", common, shlex.split(args.protect_args))
        elif args.protector in ("em", "tap", "sep"):
            trained = {"image_size": args.image_size, "batch_size": args.batch_size, "lr": args.lr, "device": device}
            extra = shlex.split(args.protect_args)
            protect_cmd = bundle_command("protect", f"protect_{args.protector}.json", dict(common, **trained), extra)
        else:
            umed = {
                "image_size": args.image_size,
                "batch_size": args.batch_size,
                "lr_generator": args.lr,
                "lr_surrogate": args.lr,
                "device": device,
            }
            extra = shlex.split(args.protect_args)
            protect_cmd = bundle_command("protect", "protect.json", dict(common, **umed), extra)
    runs: list[dict] = []
    for e in args.exploiter_list:
        for data in ("clean", "protected"):
            for d in args.defense_list if (data == "protected" or args.defend_clean) else ["none"]:
                name = f"{data}_{e}_{d}"
                run_dir = out / "runs" / name
                cmd = bundle_command(
                    "train_exploiter",
                    "train_exploiter.json",
                    {
                        "dataset_dir": dataset,
                        "datalist": split_file,
                        "train_dir": protected_dir if data == "protected" else None,
                        "output_dir": run_dir,
                        "exploiter": e,
                        "defense": d,
                        "image_size": args.image_size,
                        "max_epochs": args.max_epochs,
                        "batch_size": args.batch_size,
                        "lr": args.exploiter_lr,
                        "seed": args.seed,
                        "jpeg_quality": args.jpeg_quality if d == "jpeg" else None,
                        "device": device,
                        "progress": False,
                    },
                )
                runs.append({"name": name, "data": data, "exploiter": e, "defense": d, "dir": run_dir, "cmd": cmd})
    total = 1 + (protect_cmd is not None) + len(runs)
    step_rows: list[dict] = []
    n = 0

    def header(title: str, status: str) -> None:
        log(f"[{n}/{total}] {title} ... {status}")

    # ---- 1. split
    n += 1
    split_ok = read_json(split_file)
    reran_split = False
    if args.reuse and isinstance(split_ok, dict) and "training" in split_ok and steps.matches("split", split_cmd):
        header("split", "reused")
        step_rows.append({"title": "split", "status": "reused", "seconds": steps.seconds("split"),
                          "command": display_command(split_cmd)})
    else:
        header("split", "running")
        sec = run_step(split_cmd, out / "logs" / "split.log", args.quiet, out)
        steps.record("split", split_cmd, sec)
        reran_split = True
        step_rows.append({"title": "split", "status": "ran", "seconds": sec, "command": display_command(split_cmd)})
    split = read_json(split_file)

    # ---- 2. protect
    reran_protect = False
    if protect_cmd is not None:
        n += 1
        if (
            args.reuse
            and not reran_split
            and protect_complete(protect_dir)
            and steps.matches("protect", protect_cmd)
        ):
            header("protect", "reused")
            step_rows.append({"title": "protect", "status": "reused", "seconds": steps.seconds("protect"),
                              "command": display_command(protect_cmd)})
            reran_protect = False
        else:
            header("protect (training entries of the split)", "running")
            move_aside(protect_dir)  # the writer would keep old images whose hash still matches its manifest
            sec = run_step(protect_cmd, out / "logs" / "protect.log", args.quiet, out)
            steps.record("protect", protect_cmd, sec)
            reran_protect = True
            step_rows.append({"title": "protect", "status": "ran", "seconds": sec,
                              "command": display_command(protect_cmd)})
    manifest_path = find_manifest(protected_dir)
    manifest = read_json(manifest_path) if manifest_path else None
    missing = [e["image"] for e in split["training"] if locate_protected(protected_dir, e["image"]) is None]
    if missing:
        raise SystemExit(
            f"{len(missing)} training image(s) of the split are missing in the protected folder {protected_dir}, "
            f"e.g. {missing[:3]}; protect the split's training entries (or drop --protected_dir)."
        )

    # ---- 3. exploiter runs
    status = 0
    for r in runs:
        n += 1
        title = f"train_exploiter {r['exploiter']} {r['data']} defense={r['defense']}"
        upstream = reran_split or (r["data"] == "protected" and reran_protect)
        metrics = read_json(r["dir"] / "metrics.json")
        if args.reuse and not upstream and isinstance(metrics, dict) and steps.matches(r["name"], r["cmd"]):
            header(title, "reused")
            r["metrics"], r["seconds"], r["status"] = metrics, steps.seconds(r["name"]), "reused"
        else:
            header(title, "running")
            try:
                sec = run_step(r["cmd"], out / "logs" / f"{r['name']}.log", args.quiet, out)
            except SystemExit as exc:
                log(str(exc))
                r["error"], r["status"], status = f"failed, see logs/{r['name']}.log", "FAILED", 1
                step_rows.append({"title": title, "status": "FAILED", "seconds": None,
                                  "command": display_command(r["cmd"])})
                continue
            steps.record(r["name"], r["cmd"], sec)
            r["metrics"], r["seconds"], r["status"] = read_json(r["dir"] / "metrics.json"), round(sec, 1), "ran"
        m = r["metrics"] or {}
        log(f"[{n}/{total}] {title}: DSC {fmt(m.get('dsc'))} (best {fmt_best(m)}), Jaccard {fmt(m.get('jaccard'))}")
        step_rows.append({"title": title, "status": r["status"], "seconds": r["seconds"],
                          "command": display_command(r["cmd"])})

    # ---- figure and report
    settings = None
    protector_file = protected_dir.parent / "protector.pt"
    if protector_file.is_file():
        try:
            from monai_umed.protectors import load_protector

            protector, settings = load_protector(protector_file)
            settings = {**settings, **protector.config(), "epsilon": protector.epsilon}
        except (ValueError, OSError, RuntimeError) as exc:
            log(f"protector {protector_file} not usable for the figure ({exc}); using the manifest's settings")
    if settings is None and manifest:
        settings = manifest.get("settings")
    eps = float((settings or {}).get("epsilon") or ((manifest or {}).get("summary") or {}).get("linf_max") or 4 / 255)
    figure_cases, figure_error = [], None
    try:
        figure_cases = make_figure(
            dataset, split_file, protected_dir, out / "figure.png", settings, eps, args.figure_cases, manifest=manifest
        )
    except Exception as exc:  # the report is still useful without the picture
        figure_error = f"{type(exc).__name__}: {exc}"
        log(f"figure not written: {figure_error}")
    write_report(
        args, out, split, runs, step_rows, manifest, protected_dir, figure_cases, figure_error,
        time.perf_counter() - t_start,
    )
    log(f"report written: {out / 'report.md'}, {out / 'report.csv'}, {out / 'figure.png'} "
        f"({time.perf_counter() - t_start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The report card of one export, typed: what DIR/card.json holds (`CardData.to_json` gives the
on-disk format). Data only: `export.assemble` computes it, `export.markdown` renders it,
`export.report` writes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Timing:
    """How the FPS were measured: the runtimes of the two files, threads, batch, protocol."""

    compressed: str
    base: str
    threads: int
    batch_size: int
    kernels: list[str]
    op_types: list[str]
    repeats: int
    protocol: str = "median of interleaved samples after warm-up"


@dataclass(frozen=True)
class BaseFigures:
    """The base model, exported the same way as the compressed one."""

    runtime: str
    test_accuracy: float | None
    val_accuracy: float | None
    macs: int
    flops: int
    params: int
    file_bytes: int
    fps: float
    latency_ms: float
    fps_spread: float


@dataclass(frozen=True)
class CompressedFigures:
    """The exported compressed model: accuracy through its file's runtime (`test_accuracy`), in
    PyTorch (`test_accuracy_torch`) and as recorded during the search, and its measured costs."""

    runtime: str
    test_accuracy: float | None
    test_accuracy_torch: float | None
    recorded_test_accuracy: float | None
    val_accuracy: float | None
    macs: int
    flops: int
    params: int
    file_bytes: int
    packed_size_bytes: int | None
    fps: float
    latency_ms: float
    fps_spread: float


@dataclass(frozen=True)
class Recorded:
    """The trial's figures as the search recorded them."""

    runtime: str
    speedup: float | None
    fps: float | None
    val_accuracy: float | None
    test_accuracy: float | None
    base_test_accuracy: float | None
    user_metrics: dict[str, float]


@dataclass(frozen=True)
class Verification:
    """The exported file's outputs vs the float PyTorch model's on `images` inputs. `tolerance`:
    the float tolerance (None for int8, judged by top-1 agreement); `accuracy_delta`: test accuracy
    through the file minus the recorded one (None when not comparable)."""

    images: int
    inputs: str
    max_abs_diff: float
    tolerance: float | None
    output_range: float
    top1_agreement: float
    outputs_match: bool
    accuracy_delta: float | None = None


@dataclass(frozen=True)
class Layer:
    """One Conv2d/Linear layer: channels of the base and compressed model, the trial's weight bits
    (32 = float) and how the exported file runs it (int8 | float32)."""

    layer: str
    type: str
    base_channels: int | None
    kept_channels: int
    bits: int
    runs_as: str


@dataclass(frozen=True)
class Provenance:
    """Where the export came from; `mlflow`: the MLflow record (None until logged or skipped)."""

    study: str
    storage: str
    working_directory: str
    trial: int
    seed: int
    trial_weights: str
    base_checkpoint: str | None
    created: str
    export_seconds: float
    versions: dict[str, str]
    mlflow: dict | None = None


@dataclass(frozen=True)
class CardData:
    """card.json's data. `retrain`: what a recovery fine-tune did (None without one); `config`:
    the trial's compression config."""

    study: str
    trial: int
    format: str
    int8: bool
    file: str
    selection: str
    runtime: Timing
    base: BaseFigures
    compressed: CompressedFigures
    recorded: Recorded
    verification: Verification
    layers: list[Layer]
    config: dict
    retrain: dict | None
    provenance: Provenance = field(repr=False)

    @property
    def speedup(self) -> float:
        """Compressed FPS over base FPS, both measured from their exported files side by side."""
        return self.compressed.fps / self.base.fps

    @property
    def size_ratio(self) -> float:
        """How many times smaller the compressed file is than the base's."""
        return self.base.file_bytes / max(self.compressed.file_bytes, 1)

    def with_mlflow(self, record: dict) -> CardData:
        """This card with `record` as its MLflow provenance."""
        return replace(self, provenance=replace(self.provenance, mlflow=record))

    def to_json(self) -> dict:
        """The card as card.json holds it (keys in their documented order)."""
        d = asdict(self)
        head = {k: d[k] for k in ("study", "trial", "format", "int8", "file", "selection")}
        return head | {
            "runtime": d["runtime"],
            "base": d["base"],
            "compressed": d["compressed"],
            "speedup": self.speedup,
            "size_ratio": self.size_ratio,
            **{k: d[k] for k in ("recorded", "verification", "layers", "config", "retrain")},
            "provenance": d["provenance"],
        }

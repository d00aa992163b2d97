"""One overall progress bar for an evaluation: every stage (landmarks, alignment, occlusion,
embedding, scoring) adds to one total of image operations, so the ETA covers the whole run, and the
bar names the stage and the image set ("[3/27] N-O@s1.0: embed")."""
from __future__ import annotations


class Progress:
    def __init__(self, enabled: bool, desc: str = "eval"):
        self.enabled = enabled
        self.desc = desc
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=0, desc=desc, unit="img", dynamic_ncols=True,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}<{remaining}]")

    def add_total(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.total += int(n)
            self._bar.refresh()

    def stage(self, name: str, k: int | None = None, of: int | None = None) -> None:
        if self._bar is not None:
            where = f"[{k}/{of}] " if k is not None and of else ""
            self._bar.set_description_str(f"{self.desc} {where}{name}", refresh=True)

    def tick(self, n: int = 1) -> None:
        if self._bar is not None and n:
            self._bar.update(int(n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

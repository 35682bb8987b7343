"""An export's report card on disk: `Card` (the export folder and its typed data) and
`write_card` (card.json, the data; card.md, its rendering)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prunetune.export.card import CardData
from prunetune.export.files import CARD_JSON, CARD_MD
from prunetune.export.markdown import card_markdown, card_summary


@dataclass(frozen=True)
class Card:
    """The report card of one export: `data` is what DIR/card.json holds, `directory` is DIR."""

    directory: Path
    data: CardData

    @property
    def model_path(self) -> Path:
        return self.directory / self.data.file

    def summary(self) -> str:
        """One paragraph for the terminal (rendering only)."""
        return card_summary(self.data, self.model_path)


def write_card(card: Card) -> None:
    """Write DIR/card.json (the data) and DIR/card.md (its rendering)."""
    text = json.dumps(card.data.to_json(), indent=2, default=str) + "\n"
    (card.directory / CARD_JSON).write_text(text)
    (card.directory / CARD_MD).write_text(card_markdown(card.data))

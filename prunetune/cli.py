"""Command-line interface (placeholder until the commands land)."""
def main(argv=None) -> int:
    return 0

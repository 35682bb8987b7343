"""`python -m prunetune` runs the command-line interface."""

from prunetune.cli import main

code = main()
# CPython quirk (seen on 3.11): when a string exec/eval anywhere in the command (a library
# evaluating an annotation, a user's model) ended in the KeyboardInterrupt that Ctrl-C / SIGTERM
# raise, `python -m` exits by SIGINT (-2) at shutdown, although main() handled it and chose 130 /
# 143. The flag behind it is cleared by the next string exec that completes: this constant one.
exec("pass")
raise SystemExit(code)

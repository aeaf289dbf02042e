"""The publisher: ``python publisher.py`` (and its alias ``cloud_manager.py``), run on a laptop or in CI.

It sends a batch (``submit``, with ``plan`` for ``--dry-run``), follows and shows it (``views`` gathers a
batch's state as typed views, ``render`` draws them, ``report`` writes the HTML report), and maps the
subcommands to those (``commands``, whose ``main`` is the entry point). ``arguments`` holds the flags and
exit codes, ``target`` picks Google Cloud or the local cloud; ``target.local_cloud`` is the one place that
reaches into the ``localcloud`` package.

What may import it: ``publisher.py``, ``cloud_manager.py``, scripts, benchmarks and tests. Nothing that
runs in a Cloud Function or on a VM does (``scripts/build_functions.py`` leaves this folder out of the
function bundles), and nothing here is imported by the rest of ``sinergym_cloud``.
"""

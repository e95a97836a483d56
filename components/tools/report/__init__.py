"""The paper's evaluation figures from a TFMA result: Tables 4 and 5, ROC curves with
the crystal operating points, and accuracy per institution.

:func:`results.load_results` reads what the Evaluator wrote; :mod:`tables` derives
the paper's tables from it; :func:`render.write_report` writes Markdown, PNG figures
and JSON.
"""

"""The report of a run dir, split by job: facts (reading), figures, page (HTML), card (dataset card).

The stage entry point is `seqdistill.stages.report.run`.
"""

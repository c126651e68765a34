"""The search: SearchOptions (options.py), the loop and its gates (loop.py, gates.py, stop.py,
run_trial.py, budget.py), reuse of earlier trials (reuse.py), the reference (reference.py), the
confirmation (confirm_plan.py sizes it, finalists.py runs it, confirm.py decides), one ranking and Pareto front
(ranking.py), the storage as autotune uses it (ledger.py, storage.py, shared_study.py), and the
thin `Search` over them (study.py)."""

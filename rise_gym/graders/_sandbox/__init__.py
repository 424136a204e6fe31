"""Private implementation of the code sandbox behind `rise_gym.graders.code`.

``worker.py`` (in the grading process) starts one ``zygote.py`` per pool slot inside
fresh namespaces; the zygote forks a child per program that runs ``harness.py``.
"""

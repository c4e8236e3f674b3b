"""``python run_eval.py [group=option ...] [key=value ...]`` in a checkout: the same as the installed
``live2diff-bench`` command (eval/app.py has the Hydra app, its exit statuses and options)."""

from eval.app import run

if __name__ == "__main__":
    run()

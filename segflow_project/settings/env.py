from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A local .env file is read when present, so a developer can keep secrets out of the shell history.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

"""Django settings of the e2e test app (`run.py` fills in the port)."""
import os

SECRET_KEY = "ebb-e2e"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "shop",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": os.environ["EBB_PORT"],
    }
}
USE_TZ = False
# ebb sessions run in UTC (Django's default is America/Chicago).
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

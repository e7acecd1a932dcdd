"""The operator console under ``/console/``: server-rendered pages behind the admin credential."""

"""What keeps the web side safe to put on the internet: login throttling (`login_throttle.py`, used
by the admin's and the desk's login forms in `forms.py`) and the Content-Security-Policy
(`csp.py`)."""

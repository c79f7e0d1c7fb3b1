"""The Textual app: ``create_app`` in app.py, screens/ per view, widgets/ shared between views.
Only this package imports Textual."""

"""Widgets shared by the screens: the job table, the curves panel, the image grid."""

"""The app's screens: jobs (home), new job form, job/run detail, runs browser, FID/IS panel,
sampling session."""

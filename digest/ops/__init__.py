"""Running unattended: scheduled jobs, the scheduler, health, incidents and alerts."""

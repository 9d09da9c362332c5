"""What each ``attnvision`` sub-command does; cli.py only parses arguments and reports."""

"""The running agent: schedule polls, feed the core, buffer and publish."""

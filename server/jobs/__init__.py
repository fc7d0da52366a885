"""What training and prediction jobs share: one repository (lookup, claim and lease, progress, finish, cancel,
reap) and one answer base. Web-free: the worker imports it."""

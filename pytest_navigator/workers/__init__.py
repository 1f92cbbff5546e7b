"""Process plumbing: where worker processes come from (fork servers) and runtimes run in them
(isolation).
"""

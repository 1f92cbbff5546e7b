"""Process plumbing: where worker processes come from (fork_servers), their lifecycle, requests with
timeouts and crash/hang reports (isolation), and how code is sent to them (pickling). It knows no
runtime and no measurement: runtimes/remote.py and measure/executor.py run their code in workers.
"""

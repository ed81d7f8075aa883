"""Runs a command, samples the resident memory of its whole process tree every 0.2 s, and prints
`rows seconds peak_mb`. MODE `line`: the command prints `rows seconds` last; MODE `sluice`: the
rows and seconds come from `sluice score`'s `predictions ...: N rows ... in S s` line."""
import os
import re
import subprocess
import sys
import threading
import time

mode, cmd = sys.argv[1], sys.argv[2:]
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
peak = 0


def tree_rss(pid):
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except OSError:
                pass
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def sample():
    global peak
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.2)


t = threading.Thread(target=sample)
t.start()
out, _ = proc.communicate()
t.join()
if proc.returncode != 0:
    sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{out}")
if mode == "sluice":
    m = re.search(r"predictions\s+\S+: (\d+) rows .* in ([\d.]+) s", out)
    rows, seconds = m.group(1), m.group(2)
else:
    rows, seconds = out.strip().splitlines()[-1].split()[:2]
print(rows, seconds, peak // 1024)

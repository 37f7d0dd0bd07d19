"""Bad: exits while being imported, as a module-level argparse does when it sees the server's own
command line. Only this graph may fail: the server and its other graphs go on."""

raise SystemExit(2)

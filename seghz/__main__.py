from seghz.cli import entry

entry()

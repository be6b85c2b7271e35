from tre.cli import run

run()

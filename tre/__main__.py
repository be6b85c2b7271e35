from tre.cli import run

if __name__ == "__main__":  # not when a portal worker process starts (multiprocessing spawn)
    run()

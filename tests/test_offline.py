"""The offline default never touches the network: the book's loaders run in a process
whose sockets refuse to connect, with the Hugging Face offline switches left unset."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access attempted: " + repr(args))

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse

    from shrinklib import data, zoo
    splits = data.rotten_tomatoes()
    data.bbc_news()
    data.lm_text("hamlet")
    model, tokenizer = zoo.encoder(num_labels=2)
    teacher, _ = zoo.teacher("rt")
    decoder, _ = zoo.decoder()
    print("offline ok", len(splits["test"]))
""")


def test_default_models_and_data_load_with_the_network_cut_off():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "offline ok 1500" in result.stdout

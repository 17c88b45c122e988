"""The bench: attacks against a federation, run on any engine and scored the same way.

- :mod:`.scenario`: the federation and its attack campaign as values, and its run config;
- :mod:`.setup`: what a scenario builds (model, partitions, aux data, attack, guards);
- :mod:`.records`: what a run reports (leaks, verdicts, rounds) and its JSON form;
- :mod:`.scoring`: the one leak-scoring path (matched PSNR against the true images);
- :mod:`.campaign`: the malicious server, engine-free (who, which model, what it recovers);
- :mod:`.inprocess`: the in-process engine; :mod:`.engines`: the engine registry;
- :mod:`.attack_round`: one attacked round, scored (``gradguard attack``).
"""

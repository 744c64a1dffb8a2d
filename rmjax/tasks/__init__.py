"""Tasks: what the trainer trains.

A task is a `rmjax.train.Task` record made from a config: its model, loss, data and
evaluation. `rmjax.train.train_and_evaluate(config, workdir, task)` runs any of them.

  reward_model   pairwise reward models of every family (`rmjax.tasks.reward_model`; one
                 file per family under `rmjax/tasks/reward_model/families/`)
"""

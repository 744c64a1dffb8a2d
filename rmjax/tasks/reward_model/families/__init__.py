"""One module per reward-model family, each defining `FAMILY` (`rmjax.tasks.reward_model.Family`).

A module here is a family: `get_family(name)` imports the module of that name. Add a family
by adding a module.
"""

"""Pure modules every part of the kit shares (the trainer, the server, the client, infra): catalog, run layout,
prompt template, gs:// storage, atomic writes. They import nothing from the rest of the kit."""

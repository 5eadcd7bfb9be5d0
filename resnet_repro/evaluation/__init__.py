"""The test protocols of Tables 2-4: centre crop, 10-crop, multi-scale (`protocols`), and their
names (`names`, no torch, for the configs and the report).

May import: `data`, `config`, the ground."""

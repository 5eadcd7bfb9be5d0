"""The typed settings of a run (`settings`: frozen dataclasses, no torch), the arch spec
(`archs`), where the configs live (`paths`), and which settings may change on resume (`resume`).
`resnet_repro.schema` registers them as Hydra's schema and parses a composed config into them.

May import: `data.settings` and the ground (`errors`, `atomic`)."""

"""The typed settings of a run (`settings`: frozen dataclasses, no torch), the arch spec
(`archs`), where the configs live (`paths`), and which settings may change on resume (`resume`).
They are the config's schema too: `resnet_repro.schema` registers them in Hydra's ConfigStore and
turns a composed config into them with `OmegaConf.to_object`.

May import: `data.settings` and the ground (`errors`, `atomic`)."""

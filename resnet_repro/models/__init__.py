"""The model family: the ResNet class and its plain twin (`resnet`), blocks, grouped BN, MAC
counts, the table of named models beside the paper's (`table`), and starting weights:
torchvision's (`pretrained`) and published peers' (`peers`). A run's own trained model is
`resnet_repro.trained` (it parses the run's saved config, a layer up).

May import: `evaluation`, `runs` (checkpoints), `paper`, `config`, `data`, the ground."""

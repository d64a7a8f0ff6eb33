"""The floor every face detector family shares: configs' shared sections (`configs`), data
resolution and datasets (`data`), WIDER evaluation (`evaluation`, the official protocol in
`wider_eval` + `wider_protocol`), box coding (`box_coder`), the training step and optimizer
(`training`) and backbones. Families are sibling sub-packages (`retinanet`, `blazeface`) that
import this floor and never each other."""

"""Feature pyramid P3-P6 (Lin et al. 2016, as adapted by the seed, section 3.5.2).

Built in the functional graph from a layers namespace (default `handgrad.layers`):
    L_k = Conv1x1(C_k)                          lateral connections, k = 3, 4, 5
    P5' = L_5
    P4' = L_4 + Up2(P5'),   P3' = L_3 + Up2(P4')   top-down path; Up2 is nearest-neighbour
                                                   up-sampling (the seed's "k-NN"; FPN itself
                                                   uses nearest too, RetinaNet bilinear)
    P_k = Conv3x3(P_k')                         anti-aliasing convolutions, k = 3, 4, 5
    P6  = Conv3x3, stride 2 (C5)                RetinaNet's extra level (from C5)
All outputs have `filters` channels. The seed stops at P6 (RetinaNet goes on to P7), which keeps
the small strides where small faces live. Input sides must be multiples of 32 so that every
Up2(P_{k+1}') has the size of L_k.
"""

import keras

import handgrad.layers


def feature_pyramid(c3, c4, c5, filters=256, layers=None, name="fpn"):
    """Builds P3-P6 from the backbone outputs (symbolic Keras tensors).

    Args:
        c3, c4, c5: `(B, H/8, W/8, *)`, `(B, H/16, W/16, *)`, `(B, H/32, W/32, *)`.
        filters: channels of every pyramid level.
        layers: the layers namespace (default `handgrad.layers`; `keras.layers` for the twin).
        name: prefix of the layer names.
    Returns: [P3 `(B, H/8, W/8, filters)`, P4, P5, P6 `(B, H/64, W/64, filters)`].
    """
    layers = handgrad.layers if layers is None else layers
    lateral = [layers.Conv2D(filters, 1, name=f"{name}_lateral_c{k}")(c)
               for k, c in zip((3, 4, 5), (c3, c4, c5), strict=True)]
    top_down = [lateral[2]]  # P5'
    for k in (4, 3):
        up = layers.UpSampling2D(2, interpolation="nearest",
                                 name=f"{name}_upsample_p{k + 1}")(top_down[-1])
        top_down.append(keras.layers.Add(name=f"{name}_merge_p{k}")([lateral[k - 3], up]))
    p5, p4, p3 = top_down
    outputs = [layers.Conv2D(filters, 3, padding="same", name=f"{name}_output_p{k}")(p)
               for k, p in zip((3, 4, 5), (p3, p4, p5), strict=True)]
    p6 = layers.Conv2D(filters, 3, strides=2, padding="same", name=f"{name}_output_p6")(c5)
    return outputs + [p6]

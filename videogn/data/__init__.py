"""From a video file to a normalized clip tensor; read the modules in this order.

lists.py        `path label` lists -> [VideoRecord]; class files
decoders.py     decode(path, frame_indices) -> uint8 [T, H, W, 3]; the BACKENDS registry
                (video_reader.py: what backends share; pyav_backend.py, decord_backend.py)
samplers.py     pure index logic: random F x I train clips, K uniform test clips
transforms.py   scale jitter, crops, flip, normalization presets
dataset.py      record -> sampler -> decoder -> transform, with the bad-video policy
demo.py         the built-in synthetic dataset; kinetics.py and check.py back `videogn-data`
prepare.py      re-encode a dataset for fast clip decoding (`videogn-data prepare`)
"""

"""The radar QC UNet: vocabulary (channels, classes, masks), synthetic training data, model,
training and handler.
"""

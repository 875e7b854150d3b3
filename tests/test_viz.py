"""Pictures: grids, single images, loss and metric curves, the training GIF."""
import numpy as np
from PIL import Image

from nanostyle import viz


def test_pictures(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (10, 1, 8, 8))
    viz.save_image_grid(images, str(tmp_path / "grid.png"))
    assert Image.open(tmp_path / "grid.png").size == (4 * 10 + 2, 3 * 10 + 2)
    paths = viz.save_images(images[:3], str(tmp_path / "one"), ["a", "b", "c"])
    assert Image.open(paths[0]).size == (8, 8) and Image.open(paths[0]).mode == "L"
    records = [dict(kimg=i / 10, loss_G=1.0 / (i + 1), loss_D=0.5, ada_p=i / 100, swd_avg=3.0 - i / 10) for i in range(20)]
    viz.plot_losses(records, str(tmp_path / "loss.png"))
    viz.plot_metrics(records, str(tmp_path / "m.png"), keys=["swd_avg"])
    gif = viz.make_gif([str(tmp_path / "grid.png")] * 3, str(tmp_path / "t.gif"))
    assert Image.open(gif).n_frames >= 1 and Image.open(tmp_path / "loss.png").size[0] > 200

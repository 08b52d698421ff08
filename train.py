"""Train, evaluate and adapt emotion models; the same commands as `emotion-vit` (emotion_vit/cli.py).

    python train.py --config configs/fer2013-pvt.yaml               # train a recipe
    python train.py --config configs/tiny.yaml --data faces.zip --num_train_epochs 1
    python train.py evaluate --model models/emotion-vit-fer2013 --data ../shared/data/fer2013.zip --split validation
    python train.py evaluate-frames --model models/emotion-vit-fer2013 --data photos/   # photos/<label>/<image>
    python train.py adapt --base models/emotion-vit-fer2013 --references my_refs/ --name room12
    python train.py push --model models/emotion-vit-fer2013 --repo-id USER/NAME
    python train.py --help                                            # the commands
"""

import sys

from emotion_vit.cli import train_script

if __name__ == "__main__":
    train_script(sys.argv[1:])

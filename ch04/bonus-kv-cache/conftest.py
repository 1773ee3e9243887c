"""Let the tests in this folder import its modules by plain name (``from gpt import GPTModel``).

Every course folder with modules and tests has an identical copy of this file. Folders reuse module names
(each chapter has its own ``previous_chapters.py``), so modules of the same name imported for another folder's
tests are forgotten first.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for module_file in HERE.glob("*.py"):
    if module_file.stem != "conftest":
        sys.modules.pop(module_file.stem, None)
sys.path.insert(0, str(HERE))

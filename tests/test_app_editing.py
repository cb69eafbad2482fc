"""`ois app`'s editing tools in headless Chromium: finish object and save all objects, mask opacity, loading a
mask as the previous mask, zoom and pan (clicks land on the image pixel under the cursor)."""
from __future__ import annotations

import numpy as np

from ois_lightning.protocol.predictor import Predictor

from .test_app import ckpt, save_png, scene, serving  # noqa: F401
from .test_app_browser import browser, canvas_pixels, click_image, downloaded, open_image, screenshot, wait_for  # noqa: F401


def start(driver, server, name: str = "scene.png") -> None:
    driver.get(server.url)
    wait_for(driver, "ois.renders >= 1")
    open_image(driver, name)


def test_browser_finish_object_save_all_and_opacity(ckpt, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    driver, downloads = browser
    save_png(tmp_path / "scene.png", scene(300, 400))
    with serving(ckpt, tmp_path) as server:
        start(driver, server)
        click_image(driver, 0.5, 0.5)
        wait_for(driver, "ois.state.clicks.length === 1")
        first = canvas_pixels(driver)[1]
        driver.find_element(By.ID, "finish").click()
        wait_for(driver, "ois.state.objects === 1 && ois.state.clicks.length === 0")
        assert canvas_pixels(driver, "objects")[1] == first and canvas_pixels(driver)[1] == 0  # kept, next one
        click_image(driver, 0.15, 0.1)
        wait_for(driver, "ois.state.clicks.length === 1")
        assert canvas_pixels(driver)[1] > 0 and canvas_pixels(driver, "objects")[1] == first

        screenshot(driver, "objects")
        driver.execute_script("const o = document.getElementById('opacity'); o.value = 0.2;"
                              "o.dispatchEvent(new Event('input'));")
        assert driver.execute_script(
            "return ['mask', 'objects'].map((id) => getComputedStyle(document.getElementById(id)).opacity);"
        ) == ["0.2", "0.2"]
        driver.find_element(By.ID, "saveAll").click()
        labels = downloaded(downloads / "scene_objects.png")
        assert np.array_equal(labels, server.session.labels()) and set(np.unique(labels)) <= {0, 1, 2}
        assert (labels == 1).sum() > 0 and (labels == 2).sum() > 0


def test_browser_loaded_mask_is_the_previous_mask(ckpt, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    driver, _ = browser
    image = scene(300, 400)
    save_png(tmp_path / "scene.png", image)
    loaded = np.zeros((300, 400), bool)
    loaded[60:200, 80:320] = True
    mask_file = save_png(tmp_path / "masks" / "prior.png", loaded.astype(np.uint8) * 255)
    with serving(ckpt, tmp_path) as server:
        start(driver, server)
        driver.find_element(By.ID, "maskfile").send_keys(str(mask_file))
        wait_for(driver, "ois.state.overlay !== null && ois.state.clicks.length === 0")
        assert canvas_pixels(driver)[1] == loaded.sum()
        click_image(driver, 0.5, 0.5)
        wait_for(driver, "ois.state.clicks.length === 1")
        (y, x), = [(c["y"], c["x"]) for c in driver.execute_script("return ois.state.clicks;")]
        p = Predictor.from_checkpoint(ckpt, device="cpu")
        p.set_image(image)
        assert np.array_equal(server.session.mask(), p.predict(np.array([[y, x]]), np.array([1]), loaded)[0])


def test_browser_zoom_and_pan(ckpt, browser, tmp_path):  # noqa: F811
    """Zoom 1.5x about the centre, pan by Shift+drag (no click sent), zoom with the wheel: each click lands on
    the image pixel the transform puts under the cursor."""
    from selenium.webdriver.common.action_chains import ActionChains, ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver, _ = browser
    save_png(tmp_path / "scene.png", scene(300, 400))
    with serving(ckpt, tmp_path) as server:
        start(driver, server)
        stage = driver.find_element(By.ID, "stage")
        assert (stage.size["width"], stage.size["height"]) == (400, 300)  # shown 1:1, so CSS px = image px
        driver.find_element(By.ID, "zoomIn").click()
        click_image(driver, 0.75, 0.75, element="stage")  # stage (225, 300) -> image ((225+75)/1.5, (300+100)/1.5)
        wait_for(driver, "ois.state.clicks.length === 1")
        last = "ois.state.clicks[ois.state.clicks.length - 1]"
        assert abs(driver.execute_script(f"return {last}.y;") - 200) <= 1
        assert abs(driver.execute_script(f"return {last}.x;") - 266) <= 1

        (ActionChains(driver).key_down(Keys.SHIFT).move_to_element(stage).click_and_hold().move_by_offset(-60, -45)
         .release().key_up(Keys.SHIFT).perform())
        assert driver.execute_script("return [oisView.tx, oisView.ty];") == [-160, -120]
        click_image(driver, 0.5, 0.5, element="stage")  # stage (150, 200) -> image ((150+120)/1.5, (200+160)/1.5)
        wait_for(driver, "ois.state.clicks.length === 2")  # the drag sent no click
        assert server.session.model.calls == 2
        assert [driver.execute_script(f"return {last}.{k};") for k in "yx"] == [180, 240]
        screenshot(driver, "zoom")

        driver.find_element(By.ID, "zoomFit").click()
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(stage), 0, -100).perform()
        assert driver.execute_script("return oisView.scale;") == 1.25
